from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from tasklab_common.heartbeat import Heartbeat, age
from tasklab_common.messages import MAX_ABS_NUMBER, MAX_NUMBERS, TaskMessage, TaskParams
from tasklab_common.models import Method, TaskKind
from tasklab_common.work import SimulatedFailure, execute, process_data, process_task, retry_delay


def test_process_task_sleeps_and_answers_like_the_guide() -> None:
    slept: list[float] = []
    out = process_task(3, 2.5, sleep=slept.append)
    assert slept == [2.5]
    assert out["status"] == "success" and out["task_num"] == 3


def test_fail_times() -> None:
    with pytest.raises(SimulatedFailure):
        process_task(1, 0, attempt=2, fail_times=2)
    assert process_task(1, 0, attempt=3, fail_times=2)["status"] == "success"


def test_process_data_statistics() -> None:
    out = process_data(1, [1.0, 2.0, 3.0, 10.0])
    assert out["count"] == 4 and out["sum"] == 16.0 and out["mean"] == 4.0
    assert out["median"] == 2.5 and out["min"] == 1.0 and out["max"] == 10.0


def test_execute_dispatches_on_kind() -> None:
    msg = TaskMessage(
        task_id="t",
        num=2,
        kind=TaskKind.PROCESS_DATA,
        method=Method.RABBITMQ,
        params=TaskParams(numbers=[4, 6]),
    )
    assert execute(msg, 1)["mean"] == 5.0


def test_retry_delay_doubles_and_caps() -> None:
    assert [retry_delay(n, 1.0, 5.0) for n in range(5)] == [1.0, 2.0, 4.0, 5.0, 5.0]


def test_heartbeat_touches_at_most_every_interval_and_removes(tmp_path: Path) -> None:
    path = tmp_path / "hb"
    hb = Heartbeat(path, interval=3600)
    hb.beat()
    assert path.exists()
    os.utime(path, (0, 0))
    hb.beat()  # within the interval: untouched
    assert age(path) > 1000
    hb.beat(force=True)
    assert age(path) < 5
    hb.stop()
    assert not path.exists()
    Heartbeat(None).beat()  # no file configured: nothing to do


def test_the_largest_numbers_allowed_keep_the_statistics_finite() -> None:
    """Numbers beyond MAX_ABS_NUMBER are refused at submission: two of 1e308 would
    overflow the sum (fsum raises) and the median (inf), on every attempt."""
    with pytest.raises(ValidationError, match="less than or equal"):
        TaskParams(numbers=[1e308, 1e308])
    for sign in (1, -1):
        numbers = [sign * MAX_ABS_NUMBER] * MAX_NUMBERS
        params = TaskParams(numbers=numbers)
        result = process_data(1, list(params.numbers or []))
        values = [result[k] for k in ("sum", "mean", "median", "min", "max", "stdev")]
        assert all(math.isfinite(v) for v in values), result
