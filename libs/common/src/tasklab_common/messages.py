"""What travels between the services.

- :class:`TaskParams`: a task's validated parameters (also the submit request's).
- :class:`TaskMessage`: the JSON body the api publishes to the direct queue;
  :class:`CancelNotice`: what it publishes when such a task is cancelled.
- :func:`celery_call` / :func:`message_from_celery`: the one mapping between a task
  and the Celery task signature of the original guide,
  ``process_task(task_num, timeout, worker_id='celery')``.
- :class:`StatusUpdate` / :class:`CallbackReply`: the workers' status callback.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Final, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    field_validator,
    model_validator,
)

from tasklab_common.models import WORKER_STATUSES, Method, TaskKind, TaskStatus, Verdict

#: Upper bounds shared by validation everywhere.
MAX_DURATION_SECONDS: Final = 3600.0
MAX_NUMBERS: Final = 10_000
MAX_FAIL_TIMES: Final = 10
MAX_RESULT_BYTES: Final = 64 * 1024
MAX_ERROR_CHARS: Final = 2000
MAX_WORKER_CHARS: Final = 200
#: A task id: no control characters (PostgreSQL's text cannot hold a NUL).
TASK_ID_PATTERN: Final = r"^[^\x00-\x1f\x7f]+$"
#: A worker's name as Celery (``celery@<host>``) and the consumer (``consumer@<host>``)
#: make it: what the UI shows and logs print, so no markup, spaces or control characters.
WORKER_NAME_PATTERN: Final = r"^[A-Za-z0-9_.@:+-]+$"
WorkerName = Annotated[
    str, Field(min_length=1, max_length=MAX_WORKER_CHARS, pattern=WORKER_NAME_PATTERN)
]

Duration = Annotated[
    float,
    Field(
        strict=True,
        ge=0,
        le=MAX_DURATION_SECONDS,
        allow_inf_nan=False,
        description="Seconds of simulated work (process_task's `timeout`).",
    ),
]
#: Largest magnitude of a number of process_data: MAX_NUMBERS of them still add up (and
#: two of them average) within a float's range, so the statistics cannot overflow.
MAX_ABS_NUMBER: Final = 1e300
FiniteNumber = Annotated[
    float, Field(strict=True, allow_inf_nan=False, ge=-MAX_ABS_NUMBER, le=MAX_ABS_NUMBER)
]


class TaskParams(BaseModel):
    """A task's parameters; what a worker needs besides the task's identity."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    duration: Duration = 0.0
    numbers: Annotated[
        list[FiniteNumber] | None,
        Field(max_length=MAX_NUMBERS, description="Input of process_data."),
    ] = None
    fail_times: Annotated[
        int,
        Field(
            strict=True,
            ge=0,
            le=MAX_FAIL_TIMES,
            description="Make the first N attempts fail, to see retries.",
        ),
    ] = 0


def check_params_for_kind(kind: TaskKind, params: TaskParams) -> None:
    """Raise ``ValueError`` when ``params`` do not fit ``kind``."""
    if kind is TaskKind.PROCESS_DATA and not params.numbers:
        raise ValueError("process_data needs a non-empty list `numbers`")
    if kind is TaskKind.PROCESS_TASK and params.numbers is not None:
        raise ValueError("`numbers` is only for kind process_data")


class TaskMessage(BaseModel):
    """Body of a message on the direct queue (method ``rabbitmq``)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    v: Literal[1] = 1
    task_id: str
    num: int
    kind: TaskKind
    method: Method
    params: TaskParams

    @model_validator(mode="after")
    def _params_fit_kind(self) -> TaskMessage:
        check_params_for_kind(self.kind, self.params)
        return self


class CancelNotice(BaseModel):
    """The api's notice that a direct-queue task was cancelled (published to
    :data:`~tasklab_common.queues.CANCEL_EXCHANGE` after the task was marked
    ``CANCELLED``): the consumer that runs it stops it."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    v: Literal[1] = 1
    task_id: Annotated[str, Field(min_length=1, max_length=64, pattern=TASK_ID_PATTERN)]


#: ``worker_id`` argument of the Celery tasks, as in the guide.
CELERY_WORKER_ID: Final = "celery"
#: Celery's ``origin`` header of the task messages the api publishes
#: (``tasklab-api@<host>``): a worker tells them from tasks sent by other code, e.g.
#: the guide's ``process_task.delay(...)``.
API_ORIGIN_PREFIX: Final = "tasklab-api@"
#: Header (value ``1``) of the callback's 404 for a task the api does not know: a 404
#: without it (a wrong ``API_URL`` path, a proxy) is an error to retry, not an unknown task.
UNKNOWN_TASK_HEADER: Final = "X-Tasklab-Unknown-Task"


def celery_call(msg: TaskMessage) -> tuple[str, list[Any], dict[str, Any]]:
    """Celery task name, positional and keyword arguments for a task.

    ``process_task(task_num, timeout, worker_id='celery', *, method, fail_times)``
    ``process_data(task_num, numbers, worker_id='celery', *, method, fail_times, duration)``

    The Celery task id is the tasklab task id.
    """
    kwargs: dict[str, Any] = {"method": msg.method.value, "fail_times": msg.params.fail_times}
    if msg.kind is TaskKind.PROCESS_TASK:
        return msg.kind.value, [msg.num, msg.params.duration, CELERY_WORKER_ID], kwargs
    kwargs["duration"] = msg.params.duration
    return msg.kind.value, [msg.num, list(msg.params.numbers or []), CELERY_WORKER_ID], kwargs


def message_from_celery(
    task_id: str,
    kind: TaskKind,
    task_num: int,
    payload: float | list[float],
    *,
    method: str = Method.CELERY.value,
    fail_times: int = 0,
    duration: float = 0.0,
) -> TaskMessage:
    """Inverse of :func:`celery_call`, used by the Celery tasks."""
    if kind is TaskKind.PROCESS_TASK:
        if not isinstance(payload, int | float):
            raise ValueError("process_task takes a number of seconds")
        params = TaskParams(duration=float(payload), fail_times=fail_times)
    else:
        if not isinstance(payload, list):
            raise ValueError("process_data takes a list of numbers")
        params = TaskParams(
            numbers=[float(x) for x in payload], duration=float(duration), fail_times=fail_times
        )
    return TaskMessage(
        task_id=task_id, num=task_num, kind=kind, method=Method(method), params=params
    )


def to_utc(value: datetime) -> datetime:
    """An aware time in UTC; ``ValueError`` when that is outside years 1-9999 (e.g.
    0001-01-01T00:00:00+01:00), which the database could not store."""
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("out of range once in UTC") from None


def utcnow() -> datetime:
    return datetime.now(UTC)


class StatusUpdate(BaseModel):
    """A worker's report of a status change (body of ``POST /update_task_status_api/``).

    ``event_id`` identifies the change: the same change sent again (a retry after a
    lost response) is recognised and changes nothing.
    """

    model_config = ConfigDict(extra="forbid")

    task_id: Annotated[str, Field(min_length=1, max_length=64, pattern=TASK_ID_PATTERN)]
    status: TaskStatus
    attempt: Annotated[int, Field(strict=True, ge=1, le=1000)] = 1
    worker: WorkerName | None = None
    result: dict[str, Any] | None = None
    error: Annotated[str | None, Field(max_length=MAX_ERROR_CHARS)] = None
    event_id: Annotated[str, Field(min_length=8, max_length=64)] = Field(
        default_factory=lambda: uuid.uuid4().hex
    )
    at: AwareDatetime = Field(default_factory=utcnow)

    @field_validator("at")
    @classmethod
    def _in_utc_range(cls, value: datetime) -> datetime:
        return to_utc(value)

    @field_validator("result")
    @classmethod
    def _bounded_result(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        # What is stored, listed and streamed to every browser: bounded like the input.
        if value is not None:
            size = len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())
            if size > MAX_RESULT_BYTES:
                raise ValueError(f"result of {size} bytes, more than {MAX_RESULT_BYTES}")
        return value

    @model_validator(mode="after")
    def _worker_status(self) -> StatusUpdate:
        if self.status not in WORKER_STATUSES:
            allowed = ", ".join(sorted(WORKER_STATUSES))
            raise ValueError(f"a worker can report only {allowed}")
        return self


#: Most reports one callback request may carry (a JSON array of them: a batch).
MAX_REPORTS_PER_REQUEST: Final = 50


class CallbackReply(BaseModel):
    """The api's answer to a status callback.

    ``proceed`` tells a worker whether it should (still) run the task: false once the
    task is final (done elsewhere, failed or cancelled) or unknown. ``unknown``: the api
    has no such task (it answered a single report 404; in the answer to a batch, the
    report's own reply says it, see :meth:`unknown_task`).
    ``dead_letter``
    (with ``proceed`` false) tells it to reject the message without requeueing, so
    the broker moves it to the dead-letter queue: the task was delivered more times
    than the api's delivery limit allows and was marked FAILED.
    """

    applied: bool
    status: TaskStatus
    proceed: bool
    #: What the api made of the report (``applied``, ``duplicate`` and ``dead_letter``
    #: say it too, for older workers); None in the client's own reply to a 404.
    verdict: Verdict | None = None
    #: The task's attempts so far, as the api records them.
    attempts: int = 0
    duplicate: bool = False
    dead_letter: bool = False
    unknown: bool = False

    @classmethod
    def unknown_task(cls) -> CallbackReply:
        """The reply for a task the api does not know: do not run it."""
        return cls(applied=False, status=TaskStatus.FAILED, proceed=False, unknown=True)


#: A batch of reports (one signed request), and the api's answer to it: a reply per
#: report, in order.
StatusUpdates = TypeAdapter(
    Annotated[list[StatusUpdate], Field(min_length=1, max_length=MAX_REPORTS_PER_REQUEST)]
)
CallbackReplies = TypeAdapter(list[CallbackReply])


def is_batch(body: bytes) -> bool:
    """Whether a callback body is a batch (a JSON array) rather than one report."""
    return body.lstrip()[:1] == b"["


def parse_reports(body: bytes) -> list[StatusUpdate]:
    """The reports of a callback body, one or a batch (pydantic's ``ValidationError``
    for a body that is neither)."""
    if is_batch(body):
        return StatusUpdates.validate_json(body)
    return [StatusUpdate.model_validate_json(body)]


class HousekeepingRequest(BaseModel):
    """Body of ``POST /internal/housekeeping`` (signed like a status callback)."""

    model_config = ConfigDict(extra="forbid")

    requested_by: WorkerName | None = None


class HousekeepingReport(BaseModel):
    """What one housekeeping run did."""

    stuck_failed: int = Field(description="Tasks marked FAILED: no report past their limit.")
    orphans_failed: int = Field(
        0,
        description="Waiting tasks marked FAILED: their queue stayed empty, their message gone.",
    )
    purged_tasks: int = Field(description="Final tasks deleted, older than the retention.")
    purged_events: int = Field(description="Status reports of those tasks deleted.")
