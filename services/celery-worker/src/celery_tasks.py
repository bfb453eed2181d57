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

import atexit
import contextlib
import logging
import os
import signal
import time
from collections.abc import Iterator
from types import FrameType
from typing import Any, Final

from celery import Task, signals
from celery.exceptions import Reject, SoftTimeLimitExceeded

from celery_app import (
    HAND_BACK_SIGNAL,
    HOUSEKEEPING_TASK,
    TASK_LOGGER,
    WORKER_STOPPING,
    CeleryWorkerSettings,
    celery_app,
    get_settings,
)
from tasklab_common.callback import CallbackClient, CallbackError, request_housekeeping
from tasklab_common.errors import error_text
from tasklab_common.handback import HandedBack
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
from tasklab_common.protocol import Ending, RetryRule, TaskWorker
from tasklab_common.relay import RelayClient, Reporter, ReportRelay

log = logging.getLogger(TASK_LOGGER)

#: Who runs the tasks, in the guide's log lines: ``Celery Worker celery: ...``.
RUNNER: Final = "Celery Worker"


#: The worker's report relay: made in its main process before the pool forks.
_relay: ReportRelay | None = None


@signals.worker_init.connect
def start_report_relay(**_: Any) -> None:
    """Relay the pool processes' reports through the main process, where the reports
    made at once travel together (:mod:`tasklab_common.relay`). Without a relay (its
    socket cannot be made, e.g. a temporary directory whose path is too long for a Unix
    socket) each pool process reports on its own, as a solo pool does."""
    global _relay
    client = CallbackClient.from_settings(
        get_settings(), stopping=WORKER_STOPPING.is_set, batching=True
    )
    try:
        _relay = ReportRelay(client).start()
    except OSError as exc:
        log.warning("no report relay (%s): each pool process reports on its own", exc)
        return
    atexit.register(_relay.close)


#: The process's reporter: (process id, the settings it was made from, reporter).
_client: tuple[int, CeleryWorkerSettings, Reporter] | None = None


def callback_client() -> Reporter:
    """The process-wide reporter, created on first use in each process: in a pool
    process, a client of the main process's relay; elsewhere (a solo or threads pool,
    ``.apply()``), a callback client of its own.

    Kept with the process id: a prefork child never uses a client (and its connections)
    inherited from the process it was forked from. (Not an ``lru_cache`` on the
    settings: it hashed every field of them at every report.)
    """
    global _client
    pid, settings = os.getpid(), get_settings()
    if _client is None or _client[0] != pid or _client[1] is not settings:
        reporter: Reporter
        if _relay is not None and _relay.owner != pid:
            reporter = RelayClient(_relay.path)
        else:
            reporter = CallbackClient.from_settings(settings, stopping=WORKER_STOPPING.is_set)
        _client = (pid, settings, reporter)
    return _client[2]


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


def send_or_requeue(update: StatusUpdate) -> CallbackReply:
    """Send a status report to the api; requeue the message when that is impossible.

    Raises :class:`~celery.exceptions.Reject` (requeue) after ``REQUEUE_DELAY``
    seconds when the report cannot be delivered, and at once when the task's soft time
    limit strikes while the report waits for the api.
    """
    task_id, status = update.task_id, update.status
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


def task_worker(task: Task[Any, Any], worker_id: str) -> TaskWorker:
    """This worker's side of the protocol for a task: its reports go through
    :func:`send_or_requeue`, its log lines say ``Celery Worker <worker_id>``."""
    return TaskWorker(
        send_or_requeue,
        runner=RUNNER,
        name=worker_id,
        worker=task.request.hostname,
        rule=RetryRule.of(get_settings()),
        log=log,
    )


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
        error = f"invalid task arguments: {error_text(exc)}"[:MAX_ERROR_CHARS]
        if request.id:
            worker = task_worker(task, CELERY_WORKER_ID)
            worker.report(request.id, TaskStatus.FAILED, request.retries + 1, error=error)
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


def run_untracked(worker: TaskWorker, msg: TaskMessage) -> dict[str, Any]:
    """A task sent to Celery by other code than the api (the guide's
    ``process_task.delay(...)``): the api keeps no record of it, so it runs once, without
    status reports (the api is not asked either); its result (or error) goes to the
    caller through the result backend."""
    worker.say(
        logging.INFO,
        msg,
        "Task %s was not submitted through the api; running it without status reports",
        msg.num,
        attempt=1,
    )
    return worker.execute_logged(msg, 1)


def run(task: Task[Any, Any], msg: TaskMessage, worker_id: str) -> dict[str, Any]:
    """One delivery of a task (:meth:`TaskWorker.run`), with Celery's retry: a new
    message, published with the retry's countdown."""
    worker = task_worker(task, worker_id)
    if not sent_by_api(task):
        return run_untracked(worker, msg)

    def retry(exc: Exception, _attempt: int, delay: float) -> None:
        try:
            raise task.retry(exc=exc, countdown=delay, max_retries=worker.rule.max_retries)
        except Reject as lost:
            # Celery drops the message when the retry cannot be published; keep it
            # instead: its redelivery runs this attempt again.
            raise Reject(f"retry of task {msg.task_id} not published", requeue=True) from lost

    delivery = worker.run(msg, task.request.retries + 1, retry, working=hand_back_point)
    if delivery.ending is Ending.DEAD_LETTER:
        raise Reject(f"task {msg.task_id}: delivery limit reached", requeue=False)
    if delivery.ending is Ending.HANDED_BACK:
        raise Reject(f"task {msg.task_id} handed back", requeue=True)
    if delivery.ending is Ending.FAILED and delivery.error is not None:
        raise delivery.error
    if delivery.ending is Ending.DONE and delivery.result is not None:
        return delivery.result
    reply = delivery.reply
    status = None if reply is None or reply.unknown else reply.status.value
    return {"status": "skipped", "task_num": msg.num, "task_status": status}


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
