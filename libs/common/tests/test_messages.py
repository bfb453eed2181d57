from __future__ import annotations

import math

import pytest
from pydantic import ValidationError

from tasklab_common.messages import (
    StatusUpdate,
    TaskMessage,
    TaskParams,
    celery_call,
    message_from_celery,
)
from tasklab_common.models import Method, TaskKind


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
