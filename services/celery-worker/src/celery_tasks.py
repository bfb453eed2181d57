"""The guide's Celery tasks, ``process_task`` and ``process_data``.

The tasks only rebuild the :class:`~tasklab_common.messages.TaskMessage` from their
arguments; :func:`run` does the rest, as every tasklab worker does for every
delivery: report ``IN_PROGRESS`` (skip the task when the api says not to proceed, and
dead-letter its message when the api gave up on it after too many deliveries),
do the work, report ``DONE``, or ``RETRYING`` and retry later, or ``FAILED`` once no
attempt is left. A report that cannot be delivered requeues the message, so the
task is neither lost nor acknowledged before its final status is known.

A task the api did not send (the guide's ``process_task.delay(...)`` from other code:
its ``origin`` header is not the api's) is unknown to the api: it runs once without
status reports (:func:`run_untracked`), and its caller gets the result through the
result backend.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from collections.abc import Iterator
from functools import lru_cache
from types import FrameType
from typing import Any, Final

from celery import Task, signals
from celery.exceptions import Reject, SoftTimeLimitExceeded
from pydantic import ValidationError

from celery_app import (
    HAND_BACK_SIGNAL,
    HOUSEKEEPING_TASK,
    TASK_LOGGER,
    CeleryWorkerSettings,
    celery_app,
    get_settings,
)
from tasklab_common.callback import CallbackClient, CallbackError, request_housekeeping
from tasklab_common.handback import HAND_BACK_ERROR, HandedBack, start_attempt
from tasklab_common.messages import (
    API_ORIGIN_PREFIX,
    CELERY_WORKER_ID,
    MAX_ERROR_CHARS,
    CallbackReply,
    StatusUpdate,
    TaskMessage,
    message_from_celery,
)
from tasklab_common.models import Method, TaskKind, TaskStatus
from tasklab_common.work import execute, log_failed, log_finished, log_started, retry_delay

log = logging.getLogger(TASK_LOGGER)

#: Who runs the tasks, in the guide's log lines: ``Celery Worker celery: ...``.
RUNNER: Final = "Celery Worker"


@lru_cache(maxsize=1)
def _client_for(pid: int, settings: CeleryWorkerSettings) -> CallbackClient:
    return CallbackClient(
        settings.api_url,
        settings.callback_secret.get_secret_value(),
        timeout=settings.callback_timeout,
        max_wait=settings.callback_max_wait,
    )


def callback_client() -> CallbackClient:
    """The process-wide callback client, created on first use in each process.

    Keyed by process id: a prefork child never uses a client (and its connections)
    inherited from the process it was forked from.
    """
    return _client_for(os.getpid(), get_settings())


#: Whether this pool process is inside a task's work (where a hand-back may strike).
_in_work = False


def _on_hand_back(_signum: int, _frame: FrameType | None) -> None:
    """The stopping worker's signal: hand the running task back (outside the work, e.g.
    while a report is sent, it is ignored: that report finishes the task anyway)."""
    if _in_work:
        raise HandedBack


@signals.worker_process_init.connect
def _handle_hand_back_signal(**_: Any) -> None:
    signal.signal(HAND_BACK_SIGNAL, _on_hand_back)


@contextlib.contextmanager
def hand_back_point() -> Iterator[None]:
    """The work of a task: where the worker's hand-back signal interrupts it."""
    global _in_work
    _in_work = True
    try:
        yield
    finally:
        _in_work = False


def describe(exc: BaseException) -> str:
    """One line that fits a status report; a validation error names each bad field."""
    if isinstance(exc, ValidationError):
        details = "; ".join(
            f"{'.'.join(map(str, error['loc'])) or 'value'}: "
            + error["msg"].removeprefix("Value error, ")
            for error in exc.errors(include_url=False, include_input=False)
        )
        text = f"{exc.title}: {details}"
    else:
        text = f"{type(exc).__name__}: {exc}"
    return text[:MAX_ERROR_CHARS]


def report(
    task_id: str,
    status: TaskStatus,
    attempt: int,
    worker: str | None,
    *,
    result: dict[str, Any] | None = None,
    error: str | None = None,
) -> CallbackReply:
    """Report a status to the api; requeue the message when that is impossible.

    Raises :class:`~celery.exceptions.Reject` (requeue) after ``REQUEUE_DELAY``
    seconds when the report cannot be delivered, and at once when the task's soft time
    limit strikes while the report waits for the api.
    """
    update = StatusUpdate(
        task_id=task_id, status=status, attempt=attempt, worker=worker, result=result, error=error
    )
    try:
        return callback_client().report(update)
    except CallbackError as exc:
        delay = get_settings().requeue_delay
        log.error("%s; requeueing task %s in %.1fs", exc, task_id, delay)
        # The time limit striking during this wait must requeue the message too (as a
        # failure it would be acked, with the outcome unrecorded).
        with contextlib.suppress(SoftTimeLimitExceeded):
            time.sleep(delay)
        raise Reject(str(exc), requeue=True) from exc
    except SoftTimeLimitExceeded as exc:
        # The time limit struck while the api was slow to take the report: the task's
        # outcome is not recorded, so its message must not be acked.
        log.error("time limit reached while reporting task %s %s; requeueing", task_id, status)
        raise Reject(f"time limit reached while reporting {status}", requeue=True) from exc


def rebuild(
    task: Task[Any, Any],
    kind: TaskKind,
    task_num: int,
    payload: float | list[float],
    *,
    method: str,
    fail_times: int,
    duration: float = 0.0,
) -> TaskMessage:
    """The task message behind a task's arguments.

    Invalid arguments are reported ``FAILED`` (when the task has an id) and the
    message is rejected without requeueing: no attempt could ever succeed.
    """
    request = task.request
    try:
        if not request.id:
            raise ValueError("the task has no id")
        return message_from_celery(
            request.id,
            kind,
            task_num,
            payload,
            method=method,
            fail_times=fail_times,
            duration=duration,
        )
    except (ValueError, TypeError) as exc:
        error = f"invalid task arguments: {describe(exc)}"[:MAX_ERROR_CHARS]
        if request.id:
            report(
                request.id, TaskStatus.FAILED, request.retries + 1, request.hostname, error=error
            )
        if request.id and request.reply_to:
            # A caller waits for the result (the guide's .delay(...).get()): a rejected
            # message stores none, so it would wait out its timeout; tell it why now.
            with contextlib.suppress(Exception):
                task.backend.mark_as_failure(request.id, ValueError(error), request=request)
        raise Reject(error, requeue=False) from exc


def sent_by_api(task: Task[Any, Any]) -> bool:
    """Whether the api published this task (Celery's ``origin`` header names it)."""
    request = task.request
    # A worker's request has the header as an attribute; an eager apply() only in
    # ``headers``.
    origin = request.origin or (request.headers or {}).get("origin")
    return isinstance(origin, str) and origin.startswith(API_ORIGIN_PREFIX)


def run_untracked(msg: TaskMessage, worker_id: str, fields: dict[str, Any]) -> dict[str, Any]:
    """A task sent to Celery by other code than the api (the guide's
    ``process_task.delay(...)``): the api keeps no record of it, so it runs once, without
    status reports (the api is not asked either); its result (or error) goes to the
    caller through the result backend."""
    log.info(
        "%s %s: Task %s was not submitted through the api; running it without status reports",
        RUNNER,
        worker_id,
        msg.num,
        extra=fields,
    )
    return execute_logged(msg, 1, worker_id, fields)


def execute_logged(
    msg: TaskMessage, attempt: int, worker_id: str, fields: dict[str, Any]
) -> dict[str, Any]:
    """Do the work of one attempt between the guide's log lines (started, and finished
    or failed); an exception is logged and raised again."""
    log_started(log, RUNNER, worker_id, msg.num, **fields)
    try:
        result = execute(msg, attempt)
    except Exception as exc:
        log_failed(log, RUNNER, worker_id, msg.num, describe(exc), **fields)
        raise
    log_finished(log, RUNNER, worker_id, msg.num, **fields)
    return result


def run(task: Task[Any, Any], msg: TaskMessage, worker_id: str) -> dict[str, Any]:
    """One delivery of a task: report, work, report; retry while attempts are left."""
    settings = get_settings()
    attempt = task.request.retries + 1
    worker = task.request.hostname
    fields = {
        "task_id": msg.task_id,
        "task_num": msg.num,
        "method": msg.method.value,
        "worker": worker,
        "attempt": attempt,
    }

    if not sent_by_api(task):
        return run_untracked(msg, worker_id, fields)
    reply, attempt = start_attempt(
        lambda status, number: report(msg.task_id, status, number, worker), attempt
    )
    fields["attempt"] = attempt
    if reply.dead_letter:
        log.error(
            "%s %s: Task %s delivered too many times without an outcome; the api marked it "
            "%s; dead-lettering its message",
            RUNNER,
            worker_id,
            msg.num,
            reply.status,
            extra=fields,
        )
        raise Reject(f"task {msg.task_id}: delivery limit reached", requeue=False)
    if not reply.proceed:
        # Unknown although the api sent it: a submission the api answered 503 (the
        # broker's confirm did not come in time) and discarded; it must not run.
        log.info(
            "%s %s: Task %s skipped (%s)",
            RUNNER,
            worker_id,
            msg.num,
            "the api discarded it" if reply.unknown else f"the api says {reply.status}",
            extra=fields,
        )
        status = None if reply.unknown else reply.status.value
        return {"status": "skipped", "task_num": msg.num, "task_status": status}

    try:
        with hand_back_point():
            result = execute_logged(msg, attempt, worker_id, fields)
    except HandedBack:
        log.warning(
            "%s %s: Task %s handed back: the worker is stopping (attempt %s)",
            RUNNER,
            worker_id,
            msg.num,
            attempt,
            extra=fields,
        )
        report(msg.task_id, TaskStatus.RETRYING, attempt, worker, error=HAND_BACK_ERROR)
        raise Reject(f"task {msg.task_id} handed back", requeue=True) from None
    except Exception as exc:
        error = describe(exc)
        # Attempts, not Celery's retries, decide: a handed-back attempt counts too.
        if attempt > settings.max_retries:
            report(msg.task_id, TaskStatus.FAILED, attempt, worker, error=error)
            raise
        report(msg.task_id, TaskStatus.RETRYING, attempt, worker, error=error)
        countdown = retry_delay(attempt - 1, settings.retry_backoff, settings.retry_backoff_max)
        try:
            raise task.retry(exc=exc, countdown=countdown, max_retries=settings.max_retries)
        except Reject as lost:
            # Celery drops the message when the retry cannot be published; keep it
            # instead: its redelivery runs this attempt again.
            raise Reject(f"retry of task {msg.task_id} not published", requeue=True) from lost

    report(msg.task_id, TaskStatus.DONE, attempt, worker, result=result)
    return result


@celery_app.task(bind=True, name=TaskKind.PROCESS_TASK.value)
def process_task(
    self: Task[Any, Any],
    task_num: int,
    timeout: float,
    worker_id: str = CELERY_WORKER_ID,
    *,
    method: str = Method.CELERY.value,
    fail_times: int = 0,
) -> dict[str, Any]:
    """Sleep ``timeout`` seconds; return ``{'status': 'success', 'task_num': ...}``.

    Progress is reported to the api; see :func:`run`.
    """
    msg = rebuild(
        self, TaskKind.PROCESS_TASK, task_num, timeout, method=method, fail_times=fail_times
    )
    return run(self, msg, worker_id)


@celery_app.task(bind=True, name=TaskKind.PROCESS_DATA.value)
def process_data(
    self: Task[Any, Any],
    task_num: int,
    numbers: list[float],
    worker_id: str = CELERY_WORKER_ID,
    *,
    method: str = Method.CELERY.value,
    fail_times: int = 0,
    duration: float = 0.0,
) -> dict[str, Any]:
    """Statistics over ``numbers`` after ``duration`` seconds of simulated work.

    Progress is reported to the api; see :func:`run`.
    """
    msg = rebuild(
        self,
        TaskKind.PROCESS_DATA,
        task_num,
        numbers,
        method=method,
        fail_times=fail_times,
        duration=duration,
    )
    return run(self, msg, worker_id)


@celery_app.task(bind=True, name=HOUSEKEEPING_TASK, ignore_result=True, acks_late=False)
def housekeeping(self: Task[Any, Any]) -> dict[str, int]:
    """Sent by the beat: ask the api to fail stuck tasks and purge old history.

    The api owns the task store; this only sends the signed request. A failed run is
    logged and not retried: the next scheduled run asks again. Its message is acked
    when the run starts (a lost run is simply the next one), so that it is not counted
    in queue ``celery`` while the api looks whether that queue is empty.
    """
    settings = get_settings()
    report = request_housekeeping(
        settings.api_url,
        settings.callback_secret.get_secret_value(),
        requested_by=self.request.hostname,
        timeout=settings.callback_timeout,
    )
    log.info("housekeeping: %s", report.model_dump_json())
    return report.model_dump()
