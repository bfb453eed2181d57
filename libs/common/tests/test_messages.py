from __future__ import annotations

import math

import pytest
from pydantic import ValidationError

from tasklab_common.messages import (
    MAX_NUMBERS,
    MAX_RESULT_BYTES,
    HousekeepingRequest,
    StatusUpdate,
    TaskMessage,
    TaskParams,
    celery_call,
    message_from_celery,
)
from tasklab_common.models import Method, TaskKind, TaskStatus


@pytest.mark.parametrize(
    "bad",
    [
        {"duration": -1},
        {"duration": math.nan},
        {"duration": math.inf},
        {"duration": "1"},
        {"duration": True},
        {"duration": 1e9},
        {"fail_times": -1},
        {"fail_times": 1.5},
        {"numbers": [math.nan]},
        {"unknown": 1},
    ],
)
def test_params_reject(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        TaskParams.model_validate(bad)


def test_kind_needs_fitting_params() -> None:
    with pytest.raises(ValidationError, match="numbers"):
        TaskMessage(
            task_id="t",
            num=1,
            kind=TaskKind.PROCESS_DATA,
            method=Method.CELERY,
            params=TaskParams(),
        )


@pytest.mark.parametrize(
    "msg",
    [
        TaskMessage(
            task_id="a",
            num=7,
            kind=TaskKind.PROCESS_TASK,
            method=Method.SYNC,
            params=TaskParams(duration=2.5, fail_times=1),
        ),
        TaskMessage(
            task_id="b",
            num=8,
            kind=TaskKind.PROCESS_DATA,
            method=Method.CELERY,
            params=TaskParams(numbers=[1, 2.5], duration=0.5),
        ),
    ],
)
def test_celery_mapping_round_trip(msg: TaskMessage) -> None:
    name, args, kwargs = celery_call(msg)
    assert name == msg.kind.value
    assert args[0] == msg.num and args[2] == "celery"
    back = message_from_celery(msg.task_id, TaskKind(name), args[0], args[1], **kwargs)
    assert back == msg


def test_guide_signature_of_process_task() -> None:
    msg = TaskMessage(
        task_id="x",
        num=1,
        kind=TaskKind.PROCESS_TASK,
        method=Method.CELERY,
        params=TaskParams(duration=5),
    )
    assert celery_call(msg)[1] == [1, 5.0, "celery"]


def test_status_update_refuses_api_only_statuses() -> None:
    with pytest.raises(ValidationError, match="worker can report only"):
        StatusUpdate.model_validate({"task_id": "t", "status": "PENDING"})
    with pytest.raises(ValidationError):
        StatusUpdate.model_validate({"task_id": "t", "status": "CANCELLED"})
    u = StatusUpdate.model_validate({"task_id": "t", "status": "DONE"})
    assert u.attempt == 1 and len(u.event_id) >= 8 and u.at.tzinfo is not None


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("worker", "<img src=x onerror=alert(1)>", "string_pattern_mismatch"),
        ("worker", "celery@host\nINFO forged line", "string_pattern_mismatch"),
        ("worker", "— online, 99 running", "string_pattern_mismatch"),
        ("worker", "", "string_too_short"),
        ("result", {"blob": "x" * MAX_RESULT_BYTES}, "more than 65536"),
    ],
)
def test_status_update_bounds_what_a_worker_may_write(
    field: str, value: object, reason: str
) -> None:
    with pytest.raises(ValidationError, match=reason):
        StatusUpdate.model_validate({"task_id": "t", "status": "DONE", field: value})


def test_status_update_takes_the_workers_own_names_and_results() -> None:
    for name in ("celery@tasklab-celery-worker-7d9f-x2x", "consumer@host", "w1"):
        assert StatusUpdate(task_id="t", status=TaskStatus.DONE, worker=name).worker == name
    big = {"numbers": MAX_NUMBERS, "sum": 1.5e300, "text": "x" * (MAX_RESULT_BYTES - 100)}
    assert StatusUpdate(task_id="t", status=TaskStatus.DONE, result=big).result == big


def test_housekeeping_requester_is_a_worker_name() -> None:
    with pytest.raises(ValidationError, match="string_pattern_mismatch"):
        HousekeepingRequest.model_validate({"requested_by": "x\r\nforged"})
    assert HousekeepingRequest(requested_by="celery@h").requested_by == "celery@h"
