"""One message's life: parse it, report, run the work with retries, decide its fate.

Nothing here knows about pika: :meth:`TaskRunner.handle` takes a message body and
returns an :class:`Outcome`, which the consumer turns into an ack, a reject or a
requeue on the channel the message came from.
"""

from __future__ import annotations

import json
import logging
from enum import Enum
from typing import Any

from pydantic import ValidationError

from tasklab_common.callback import CallbackClient, CallbackError
from tasklab_common.handback import HAND_BACK_ERROR, HandedBack, start_attempt
from tasklab_common.messages import MAX_ERROR_CHARS, CallbackReply, StatusUpdate, TaskMessage
from tasklab_common.models import TaskStatus
from tasklab_common.work import execute, log_failed, log_finished, log_started, retry_delay
from tasklab_consumer.settings import ConsumerSettings
from tasklab_consumer.shutdown import Shutdown

log = logging.getLogger("tasklab.consumer")

#: The runner's name in the guide's log lines (``RabbitMQ Consumer <name>: ...``).
RUNNER = "RabbitMQ Consumer"


class Outcome(Enum):
    """What to do with a message once its handling is over."""

    ACK = "ack"
    REJECT = "reject"  # unusable for good: not requeued
    REQUEUE = "requeue"  # not settled: give it back to the broker


class _Skipped(Exception):
    """The api answered ``proceed: false``: the task must not run."""

    def __init__(self, dead_letter: bool) -> None:
        super().__init__("skipped")
        self.dead_letter = dead_letter


def error_text(exc: BaseException) -> str:
    """An exception as a task's error message, within the callback's size limit."""
    return f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS]


def invalid_reason(exc: ValidationError) -> str:
    """A malformed message's problems on one line, e.g. ``num: Input should be...``."""
    problems = (
        f"{'.'.join(str(part) for part in error['loc']) or 'body'}: {error['msg']}"
        for error in exc.errors(include_url=False)
    )
    return f"malformed task message: {'; '.join(problems)}"[:MAX_ERROR_CHARS]


def task_id_of(body: bytes) -> str | None:
    """The ``task_id`` of a body that is JSON but not a valid task message, if any."""
    try:
        data = json.loads(body)
    except ValueError:
        return None
    task_id = data.get("task_id") if isinstance(data, dict) else None
    return task_id if isinstance(task_id, str) and task_id else None


class TaskRunner:
    """Runs task messages and reports their progress to the api."""

    def __init__(
        self, settings: ConsumerSettings, callbacks: CallbackClient, shutdown: Shutdown
    ) -> None:
        self._settings = settings
        self._callbacks = callbacks
        self._shutdown = shutdown
        self._worker = settings.consumer_name

    def handle(self, body: bytes) -> Outcome:
        """Process one message body; what to do with the message once it is over."""
        try:
            msg = TaskMessage.model_validate_json(body)
        except ValidationError as exc:
            if self._refuse(body, exc):
                return Outcome.REJECT
            return self._requeue_later()
        try:
            self._run(msg)
        except _Skipped as skipped:
            if skipped.dead_letter:
                log.error(
                    "task %s delivered too many times without an outcome: the api marked it "
                    "FAILED; dead-lettering its message",
                    msg.num,
                    extra=self._extra(msg),
                )
                return Outcome.REJECT
            log.info("task %s skipped: the api said not to run it", msg.num, extra=self._extra(msg))
        except HandedBack:
            return Outcome.REQUEUE
        except CallbackError as exc:
            log.error(
                "task %s requeued in %.1fs: %s",
                msg.num,
                self._settings.requeue_delay,
                exc,
                extra=self._extra(msg),
            )
            return self._requeue_later()
        return Outcome.ACK

    def _requeue_later(self) -> Outcome:
        """Requeue after ``REQUEUE_DELAY`` (cut short by a shutdown): a report the api
        refuses (a wrong secret, a skewed clock) must not turn into a redelivery loop
        that hammers the api."""
        self._shutdown.wait(self._settings.requeue_delay)
        return Outcome.REQUEUE

    def _refuse(self, body: bytes, exc: ValidationError) -> bool:
        """Log a malformed body and, when it names a task, report that task FAILED.

        False when that report could not be delivered: the message is kept (requeued)
        until it is, so that the task does not stay ``PENDING`` for ever.
        """
        reason = invalid_reason(exc)
        task_id = task_id_of(body)
        log.error("message rejected (task_id=%s): %s", task_id, reason)
        if task_id is None:
            return True
        try:
            self._report(task_id, TaskStatus.FAILED, 1, error=reason)
        except ValidationError as report_exc:  # e.g. a task_id no report can carry
            log.error("could not report task %s as FAILED: %s", task_id, report_exc)
        except CallbackError as report_exc:
            log.error("could not report task %s as FAILED (requeued): %s", task_id, report_exc)
            return False
        return True

    def _run(self, msg: TaskMessage) -> None:
        """Run every attempt the task is allowed until one succeeds or none is left."""
        attempt = 1
        while True:
            done, attempt = self._attempt(msg, attempt)
            if done:
                return
            attempt += 1

    def _attempt(self, msg: TaskMessage, attempt: int) -> tuple[bool, int]:
        """Run one attempt: whether the task is over (DONE or FAILED reported), and the
        attempt it was (the api may have had ``attempt`` over already: see
        :func:`~tasklab_common.handback.start_attempt`)."""
        reply, attempt = start_attempt(
            lambda status, number: self._report(msg.task_id, status, number), attempt
        )
        if not reply.proceed:
            raise _Skipped(reply.dead_letter)
        extra = self._extra(msg, attempt)
        log_started(log, RUNNER, self._worker, msg.num, **extra)
        try:
            result = execute(msg, attempt, sleep=self._shutdown.work_sleep)
        except HandedBack:
            log.warning(
                "task %s handed back: the consumer is stopping (attempt %s)",
                msg.num,
                attempt,
                extra=extra,
            )
            self._report(msg.task_id, TaskStatus.RETRYING, attempt, error=HAND_BACK_ERROR)
            raise
        except Exception as exc:
            return self._attempt_failed(msg, attempt, exc), attempt
        log_finished(log, RUNNER, self._worker, msg.num, **extra)
        self._report(msg.task_id, TaskStatus.DONE, attempt, result=result)
        return True, attempt

    def _attempt_failed(self, msg: TaskMessage, attempt: int, exc: Exception) -> bool:
        """Report a failed attempt; wait before the next one if any is left."""
        error = error_text(exc)
        log_failed(log, RUNNER, self._worker, msg.num, error, **self._extra(msg, attempt))
        if attempt > self._settings.max_retries:
            self._report(msg.task_id, TaskStatus.FAILED, attempt, error=error)
            return True
        self._report(msg.task_id, TaskStatus.RETRYING, attempt, error=error)
        delay = retry_delay(
            attempt - 1, self._settings.retry_backoff, self._settings.retry_backoff_max
        )
        # A shutdown cuts the wait short: the task then finishes sooner.
        self._shutdown.wait(delay)
        return False

    def _report(
        self, task_id: str, status: TaskStatus, attempt: int, **fields: Any
    ) -> CallbackReply:
        """Send one status report; raise ``CallbackError`` when it cannot be delivered."""
        update = StatusUpdate(
            task_id=task_id, status=status, attempt=attempt, worker=self._worker, **fields
        )
        return self._callbacks.report(update)

    def _extra(self, msg: TaskMessage, attempt: int | None = None) -> dict[str, Any]:
        """Structured log fields of a task (used by the JSON log format)."""
        extra: dict[str, Any] = {
            "task_id": msg.task_id,
            "task_num": msg.num,
            "method": msg.method.value,
            "worker": self._worker,
        }
        if attempt is not None:
            extra["attempt"] = attempt
        return extra
