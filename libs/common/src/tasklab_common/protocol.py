"""The worker protocol: what every tasklab worker does with one delivery of a task.

The Celery task (``celery_tasks``) and the consumer (``tasklab_consumer.processing``)
both run :meth:`TaskWorker.run`, each with its own retry mechanism behind
:class:`Retry` and its own way of interrupting work:

1. report ``IN_PROGRESS`` with the attempt number (1 for the first) and the worker's
   name (:func:`start_attempt`); when the api says not to proceed (the task is
   cancelled, final already, or unknown) the delivery ends :attr:`Ending.SKIPPED`, or
   :attr:`Ending.DEAD_LETTER` when the api gave up on it after too many deliveries;
2. run the work (:func:`tasklab_common.work.execute`) between the guide's log lines;
3. report ``DONE`` with the result; or, when the attempt failed, ``FAILED`` if it was
   the last one allowed (:class:`RetryRule`), else ``RETRYING`` and then
   :class:`Retry`: Celery's raises (its retry is a new message), the consumer's waits
   and the next attempt runs in place;
4. the worker settles the message after the last report was delivered. A report that
   cannot be delivered or is refused raises
   :class:`~tasklab_common.callback.CallbackError` out of :meth:`TaskWorker.run`: the
   worker requeues the message after ``REQUEUE_DELAY``, never drops it.

The work can be interrupted (its sleep raises), which ends the delivery early:

- :class:`~tasklab_common.handback.HandedBack`, a stopping worker's hand-back:
  reported ``RETRYING``, the message requeued (:attr:`Ending.HANDED_BACK`);
- :class:`Cancelled`, a user's cancel reaching the worker that runs the task: nothing
  is reported (the task is ``CANCELLED`` in the api already, a final status that no
  report can change) and the message is acknowledged (:attr:`Ending.CANCELLED`).

How a cancel reaches a task a worker has started differs by method (README, "Cancel"):

- Celery (``celery``, ``sync``): the api revokes it through Celery's remote control
  (the ``celery.pidbox`` fanout exchange every worker listens on); the worker running
  it sends SIGTERM to the pool process that runs it and acknowledges its message as
  revoked. Nothing of this module runs: the process is gone.
- The consumer (``rabbitmq``): the api publishes a
  :class:`~tasklab_common.messages.CancelNotice` to the fanout exchange
  :data:`~tasklab_common.queues.CANCEL_EXCHANGE`; every consumer binds a queue of its
  own to it (exclusive, auto-delete), and the one that runs the task makes its sleep
  raise :class:`Cancelled`, within :data:`~tasklab_common.work.POLL_SECONDS`. It
  watches for the notice from before its ``IN_PROGRESS`` report on, so a cancel either
  comes before that report (which then answers "do not proceed") or finds the task
  watched. A notice lost on the way (no consumer connection at that moment) costs only
  time: the task runs to its end, and its report changes nothing.

A task not started yet needs none of this: its ``IN_PROGRESS`` report answers "do not
proceed", and it is skipped.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from enum import Enum
from typing import Any

from tasklab_common.errors import error_text
from tasklab_common.handback import HAND_BACK_ERROR, HandedBack
from tasklab_common.messages import CallbackReply, StatusUpdate, TaskMessage
from tasklab_common.models import TaskStatus
from tasklab_common.settings import WorkerSettings
from tasklab_common.work import execute, retry_delay

__all__ = [
    "Cancelled",
    "Delivery",
    "Ending",
    "Retry",
    "RetryRule",
    "TaskWorker",
    "start_attempt",
]


class Cancelled(BaseException):
    """Raised into a running task's work when a user cancelled the task.

    A ``BaseException``: the work's own ``except Exception`` must not take it for a
    failure of the attempt.
    """


class Ending(Enum):
    """How one delivery ended, which says what to do with its message."""

    DONE = "done"  # reported DONE: acknowledge
    FAILED = "failed"  # reported FAILED (no attempt left): acknowledge
    SKIPPED = "skipped"  # the api said not to run it: acknowledge
    CANCELLED = "cancelled"  # stopped by the user's cancel: acknowledge
    DEAD_LETTER = "dead_letter"  # delivered too often: reject, not requeued
    HANDED_BACK = "handed_back"  # reported RETRYING: requeue for another worker


@dataclass(frozen=True)
class Delivery:
    ending: Ending
    #: The attempt it ran (or was to run).
    attempt: int
    #: DONE: the work's result.
    result: dict[str, Any] | None = None
    #: FAILED: the last attempt's exception.
    error: Exception | None = None
    #: The api's answer to the IN_PROGRESS report.
    reply: CallbackReply | None = None


@dataclass(frozen=True)
class RetryRule:
    """How many attempts a task has and how long a worker waits between them."""

    max_retries: int
    backoff: float
    backoff_max: float

    @classmethod
    def of(cls, settings: WorkerSettings) -> RetryRule:
        return cls(settings.max_retries, settings.retry_backoff, settings.retry_backoff_max)

    def allows_after(self, attempt: int) -> bool:
        """Whether another attempt may follow ``attempt`` (1 for the first). A handed-back
        attempt counts like a failed one: ``MAX_RETRIES + 1`` attempts in all."""
        return attempt <= self.max_retries

    def delay_after(self, attempt: int) -> float:
        """Seconds before the attempt after ``attempt``: the backoff, doubling, capped."""
        return retry_delay(attempt - 1, self.backoff, self.backoff_max)


#: A worker's retry mechanism, ``retry(exc, attempt, delay)``, called once a failed
#: attempt was reported RETRYING: schedule the attempt after ``attempt`` in ``delay``
#: seconds. Returning means "run it here now" (the consumer waits first); raising ends
#: the delivery (Celery's retry publishes a new message).
Retry = Callable[[Exception, int, float], None]


#: ``report(status, attempt)``: a worker's status report of its current task.
Report = Callable[[TaskStatus, int], CallbackReply]


def start_attempt(report: Report, attempt: int) -> tuple[CallbackReply, int]:
    """Report ``IN_PROGRESS`` for ``attempt``; the api's reply and the attempt to run.

    When the api already has that attempt over (``RETRYING`` at it or later: handed
    back, or the in-place retry of a consumer that then died), the next attempt is
    claimed instead, so that the work runs as what it is: a new attempt.
    """
    reply = report(TaskStatus.IN_PROGRESS, attempt)
    if (
        reply.proceed
        and not reply.applied
        and reply.status is TaskStatus.RETRYING
        and reply.attempts >= attempt
    ):
        attempt = reply.attempts + 1
        reply = report(TaskStatus.IN_PROGRESS, attempt)
    return reply, attempt


class TaskWorker:
    """One worker's side of the protocol.

    ``send`` delivers a status report to the api (raising ``CallbackError`` when it
    cannot); ``runner`` and ``name`` begin the guide's log lines (``Celery Worker
    celery: Started processing task 1``); ``worker`` is the name reported to the api.
    """

    def __init__(
        self,
        send: Callable[[StatusUpdate], CallbackReply],
        *,
        runner: str,
        name: str,
        worker: str | None,
        rule: RetryRule,
        log: logging.Logger,
    ) -> None:
        self._send = send
        self.runner = runner
        self.name = name
        self.worker = worker
        self.rule = rule
        self._log = log

    def fields(self, msg: TaskMessage, attempt: int | None = None) -> dict[str, Any]:
        """The structured log fields of a task (used by the JSON log format)."""
        fields: dict[str, Any] = {
            "task_id": msg.task_id,
            "task_num": msg.num,
            "method": msg.method.value,
            "worker": self.worker,
        }
        if attempt is not None:
            fields["attempt"] = attempt
        return fields

    def say(
        self, level: int, msg: TaskMessage, text: str, *args: Any, attempt: int | None = None
    ) -> None:
        """Log ``<runner> <name>: <text>`` with the task's fields."""
        self._log.log(
            level,
            "%s %s: " + text,
            self.runner,
            self.name,
            *args,
            extra=self.fields(msg, attempt),
        )

    def report(
        self, task_id: str, status: TaskStatus, attempt: int, **fields: Any
    ) -> CallbackReply:
        """Send one status report of this worker."""
        update = StatusUpdate(
            task_id=task_id, status=status, attempt=attempt, worker=self.worker, **fields
        )
        return self._send(update)

    def execute_logged(
        self,
        msg: TaskMessage,
        attempt: int,
        *,
        sleep: Callable[[float], None] = time.sleep,
    ) -> dict[str, Any]:
        """Do the work of one attempt between the guide's log lines (started, and
        finished or failed); an exception is logged and raised again."""
        self.say(logging.INFO, msg, "Started processing task %s", msg.num, attempt=attempt)
        try:
            result = execute(msg, attempt, sleep=sleep)
        except Exception as exc:
            self.say(
                logging.WARNING,
                msg,
                "Task %s failed: %s",
                msg.num,
                error_text(exc),
                attempt=attempt,
            )
            raise
        self.say(logging.INFO, msg, "Task %s finished successfully", msg.num, attempt=attempt)
        return result

    def run(
        self,
        msg: TaskMessage,
        attempt: int,
        retry: Retry,
        *,
        sleep: Callable[[float], None] = time.sleep,
        working: Callable[[], AbstractContextManager[None]] = contextlib.nullcontext,
    ) -> Delivery:
        """One delivery of a task, from its ``IN_PROGRESS`` report to its last report.

        ``sleep`` is the work's sleep, where an interruption (hand-back, cancel) may raise;
        ``working()`` is entered around the work alone (Celery's hand-back signal strikes
        only there, never while a report is being sent).
        """
        while True:
            reply, attempt = start_attempt(
                lambda status, number: self.report(msg.task_id, status, number), attempt
            )
            if reply.dead_letter:
                self.say(
                    logging.ERROR,
                    msg,
                    "Task %s delivered too many times without an outcome; the api marked it "
                    "%s; dead-lettering its message",
                    msg.num,
                    reply.status,
                    attempt=attempt,
                )
                return Delivery(Ending.DEAD_LETTER, attempt, reply=reply)
            if not reply.proceed:
                # Unknown although the api sent it: a submission the api answered 503
                # (the broker's confirm did not come in time) and discarded.
                why = "the api discarded it" if reply.unknown else f"the api says {reply.status}"
                self.say(logging.INFO, msg, "Task %s skipped (%s)", msg.num, why, attempt=attempt)
                return Delivery(Ending.SKIPPED, attempt, reply=reply)
            try:
                with working():
                    result = self.execute_logged(msg, attempt, sleep=sleep)
            except HandedBack:
                self.say(
                    logging.WARNING,
                    msg,
                    "Task %s handed back: the worker is stopping (attempt %s)",
                    msg.num,
                    attempt,
                    attempt=attempt,
                )
                self.report(msg.task_id, TaskStatus.RETRYING, attempt, error=HAND_BACK_ERROR)
                return Delivery(Ending.HANDED_BACK, attempt, reply=reply)
            except Cancelled:
                self.say(
                    logging.WARNING,
                    msg,
                    "Task %s cancelled: its work was stopped (attempt %s)",
                    msg.num,
                    attempt,
                    attempt=attempt,
                )
                return Delivery(Ending.CANCELLED, attempt, reply=reply)
            except Exception as exc:
                error = error_text(exc)
                if not self.rule.allows_after(attempt):
                    self.report(msg.task_id, TaskStatus.FAILED, attempt, error=error)
                    return Delivery(Ending.FAILED, attempt, error=exc, reply=reply)
                self.report(msg.task_id, TaskStatus.RETRYING, attempt, error=error)
                retry(exc, attempt, self.rule.delay_after(attempt))
                attempt += 1
                continue
            self.report(msg.task_id, TaskStatus.DONE, attempt, result=result)
            return Delivery(Ending.DONE, attempt, result=result, reply=reply)
