"""One message's life: parse it, run the worker protocol, decide its fate.

Nothing here knows about pika: :meth:`TaskRunner.handle` takes a message body and
returns a :class:`Settlement`, which the consumer turns into an ack, a reject or a
requeue on the channel the message came from. The protocol itself (reports, work,
retry rule) is :mod:`tasklab_common.protocol`; the consumer's retry runs the next
attempt in place, after the backoff.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
from enum import Enum

from pydantic import ValidationError

from tasklab_common.callback import CallbackClient, CallbackError
from tasklab_common.errors import validation_problems
from tasklab_common.messages import MAX_ERROR_CHARS, TaskMessage
from tasklab_common.models import TaskStatus
from tasklab_common.protocol import Ending, RetryRule, TaskWorker
from tasklab_common.work import interruptible_sleep
from tasklab_consumer.cancels import CancelBoard
from tasklab_consumer.settings import ConsumerSettings
from tasklab_consumer.shutdown import Shutdown

log = logging.getLogger("tasklab.consumer")

#: The runner's name in the guide's log lines (``RabbitMQ Consumer <name>: ...``).
RUNNER = "RabbitMQ Consumer"


class Settlement(Enum):
    """What to do with a message once its handling is over."""

    ACK = "ack"
    REJECT = "reject"  # unusable for good: not requeued
    REQUEUE = "requeue"  # not settled: give it back to the broker


#: The settlement of each way a delivery can end.
SETTLEMENT_OF = {
    Ending.DONE: Settlement.ACK,
    Ending.FAILED: Settlement.ACK,
    Ending.SKIPPED: Settlement.ACK,
    Ending.CANCELLED: Settlement.ACK,
    Ending.DEAD_LETTER: Settlement.REJECT,
    Ending.HANDED_BACK: Settlement.REQUEUE,
}


def invalid_reason(exc: ValidationError) -> str:
    """A malformed message's problems on one line, e.g. ``num: Input should be...``."""
    return f"malformed task message: {validation_problems(exc, whole='body')}"[:MAX_ERROR_CHARS]


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
        self,
        settings: ConsumerSettings,
        callbacks: CallbackClient,
        shutdown: Shutdown,
        cancels: CancelBoard,
    ) -> None:
        self._settings = settings
        self._shutdown = shutdown
        self._cancels = cancels
        self._worker = TaskWorker(
            callbacks.report,
            runner=RUNNER,
            name=settings.consumer_name,
            worker=settings.consumer_name,
            rule=RetryRule.of(settings),
            log=log,
        )

    def handle(self, body: bytes) -> Settlement:
        """Process one message body; what to do with the message once it is over."""
        try:
            msg = TaskMessage.model_validate_json(body)
        except ValidationError as exc:
            if self._refuse(body, exc):
                return Settlement.REJECT
            return self._requeue_later()
        try:
            with self._cancels.watch(msg.task_id) as cancelled:
                delivery = self._worker.run(
                    msg,
                    1,
                    functools.partial(self._retry_in_place, cancelled),
                    sleep=functools.partial(self._work_sleep, cancelled),
                )
        except CallbackError as exc:
            log.error(
                "task %s requeued in %.1fs: %s",
                msg.num,
                self._settings.requeue_delay,
                exc,
                extra=self._worker.fields(msg),
            )
            return self._requeue_later()
        return SETTLEMENT_OF[delivery.ending]

    def _work_sleep(self, cancelled: threading.Event, seconds: float) -> None:
        """The work's sleep, which a hand-back or the task's cancel interrupts."""

        def check() -> None:
            self._shutdown.check_hand_back()
            CancelBoard.check(cancelled)

        interruptible_sleep(seconds, check)

    def _retry_in_place(
        self, cancelled: threading.Event, _exc: Exception, _attempt: int, delay: float
    ) -> None:
        """The consumer's retry: the next attempt runs here, after ``delay`` (cut short
        by a shutdown, or by the task's cancel, which its next report then learns)."""
        self._shutdown.wait(delay, until=cancelled)

    def _requeue_later(self) -> Settlement:
        """Requeue after ``REQUEUE_DELAY`` (cut short by a shutdown): a report the api
        refuses (a wrong secret, a skewed clock) must not turn into a redelivery loop
        that hammers the api."""
        self._shutdown.wait(self._settings.requeue_delay)
        return Settlement.REQUEUE

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
            self._worker.report(task_id, TaskStatus.FAILED, 1, error=reason)
        except ValidationError as report_exc:  # e.g. a task_id no report can carry
            log.error("could not report task %s as FAILED: %s", task_id, report_exc)
        except CallbackError as report_exc:
            log.error("could not report task %s as FAILED (requeued): %s", task_id, report_exc)
            return False
        return True
