"""Status transitions: what a worker's report or a user's cancel does to a task.

Each :class:`Transitions` method is the body of one writer transaction, run with the
task's row locked (PostgreSQL; SQLite has one writer), so concurrent reports from
several api processes cannot move a status backwards. A report is recorded whatever
it does; it moves the task only forward (:func:`~tasklab_common.models.supersedes`),
and the api's answer to it is one :class:`~tasklab_common.models.Verdict`.

Delivery limit (poison tasks): every ``IN_PROGRESS`` report of a task that is not
final is one more delivery; the start after ``delivery_limit`` of them for the same
attempt marks the task FAILED (:data:`GAVE_UP`) and tells the worker to dead-letter
its message.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Select, bindparam, func, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from tasklab_api.orm import Base, CallbackNonce, Task, TaskEvent
from tasklab_common.messages import StatusUpdate
from tasklab_common.models import TaskStatus, Verdict, supersedes

#: Default of the api's ``DELIVERY_LIMIT``.
DEFAULT_DELIVERY_LIMIT = 5
#: How the error of a task the api itself marked FAILED begins.
GAVE_UP = "gave up:"


class ReplayError(Exception):
    """A signed request's nonce was seen before."""


class TaskNotFound(Exception):
    pass


class NotCancellable(Exception):
    def __init__(self, status: TaskStatus) -> None:
        super().__init__(f"task is already {status}")
        self.status = status


@dataclass(frozen=True)
class UpdateResult:
    """What a worker's report did."""

    task: Task
    verdict: Verdict
    previous: TaskStatus
    #: The task row changed: applied, given up, or one more delivery of a task that is
    #: not final (its worker then is the one that took it). Anything else, e.g. a late
    #: report on a finished task, writes nothing and is not announced.
    changed: bool = False

    @property
    def applied(self) -> bool:
        return self.verdict is Verdict.APPLIED

    @property
    def duplicate(self) -> bool:
        return self.verdict is Verdict.DUPLICATE

    @property
    def gave_up(self) -> bool:
        return self.verdict is Verdict.GAVE_UP

    @property
    def proceed(self) -> bool:
        """Whether the worker should (still) run the task."""
        return not TaskStatus(self.task.status).is_final


@dataclass(frozen=True)
class CancelResult:
    task: Task
    previous: TaskStatus

    @property
    def was_running(self) -> bool:
        """A worker had started it (it may be running now)."""
        return self.previous in (TaskStatus.IN_PROGRESS, TaskStatus.RETRYING)


def gave_up_error(attempt: int, claims: int) -> str:
    return (
        f"{GAVE_UP} attempt {attempt} was delivered {claims} times and never reported an "
        "outcome (each run ended without a report: its worker died or was killed); "
        "the message was dead-lettered"
    )


# Statements of every status report, built once, in Core: the ORM's unit of work and
# identity map cost more than the rest of a report for rows that are never read back.
_NONCES = Base.metadata.tables[CallbackNonce.__tablename__]
_EVENTS = Base.metadata.tables[TaskEvent.__tablename__]
TASK_BY_ID = select(Task).where(Task.id == bindparam("task_id"))
_TASK_FOR_UPDATE = TASK_BY_ID.with_for_update()
_INSERT_NONCE = insert(_NONCES)
_INSERT_EVENT = insert(_EVENTS)
_EVENT_SEEN = select(_EVENTS.c.event_id).where(_EVENTS.c.event_id == bindparam("event_id"))
_STARTS = (
    select(func.count())
    .select_from(_EVENTS)
    .where(
        _EVENTS.c.task_id == bindparam("task_id"),
        _EVENTS.c.attempt == bindparam("attempt"),
        _EVENTS.c.status == TaskStatus.IN_PROGRESS.value,
    )
)


def locking(postgres: bool) -> Select[Task]:
    """The task ``:task_id``, its row locked (PostgreSQL; SQLite has one writer)."""
    return _TASK_FOR_UPDATE if postgres else TASK_BY_ID


def record_nonce(s: Session, nonce: str, now: datetime) -> None:
    """Add a signed request's nonce to the transaction; :class:`ReplayError` if seen."""
    try:
        s.execute(_INSERT_NONCE, {"nonce": nonce, "seen_at": now})
    except IntegrityError:
        raise ReplayError(nonce) from None


class Transitions:
    """The bodies of the transactions that change a task's status.

    ``notify(session, task_id)`` is called inside each transaction that changes a task
    (the announcer's PostgreSQL NOTIFY).
    """

    def __init__(
        self, *, postgres: bool, delivery_limit: int, notify: Callable[[Session, str], None]
    ) -> None:
        self._locking = locking(postgres)
        self.delivery_limit = delivery_limit
        self._notify = notify

    def locked(self, s: Session, task_id: str) -> Task | None:
        return s.execute(self._locking, {"task_id": task_id}).scalar_one_or_none()

    def apply_update(self, s: Session, update: StatusUpdate, now: datetime) -> UpdateResult | None:
        """Record a report and apply it if it moves the task forward; None for an
        unknown task."""
        task = self.locked(s, update.task_id)
        if task is None:
            return None
        previous = TaskStatus(task.status)
        if s.execute(_EVENT_SEEN, {"event_id": update.event_id}).first() is not None:
            return UpdateResult(task, Verdict.DUPLICATE, previous)
        applied = supersedes(update.status, update.attempt, previous, task.attempts)
        verdict = Verdict.APPLIED if applied else Verdict.STALE
        delivered = update.status is TaskStatus.IN_PROGRESS and not previous.is_final
        if delivered:
            # Counted before the task changes: the query would flush a first UPDATE.
            claims = self._claims(s, update.task_id, update.attempt)
            task.deliveries += 1
            if update.worker:
                task.worker = update.worker
            if claims >= self.delivery_limit:
                verdict = Verdict.GAVE_UP
                _give_up(task, update.attempt, claims + 1, now)
        if verdict is Verdict.APPLIED:
            _apply(task, update, now)
        changed = verdict in (Verdict.APPLIED, Verdict.GAVE_UP) or delivered
        if changed:
            task.updated_at = now
        s.execute(  # a plain INSERT: nothing reads the event back in this transaction
            _INSERT_EVENT,
            {
                "event_id": update.event_id,
                "task_id": update.task_id,
                "status": update.status.value,
                "attempt": update.attempt,
                "worker": update.worker,
                "applied": verdict is Verdict.APPLIED,
                "reported_at": update.at,
                "received_at": now,
            },
        )
        if changed:
            self._notify(s, task.id)
        return UpdateResult(task, verdict, previous, changed=changed)

    def cancel(self, s: Session, task_id: str, now: datetime) -> CancelResult:
        task = self.locked(s, task_id)
        if task is None:
            raise TaskNotFound(task_id)
        previous = TaskStatus(task.status)
        if previous.is_final:
            raise NotCancellable(previous)
        task.status = TaskStatus.CANCELLED.value
        task.finished_at = now
        task.updated_at = now
        self._notify(s, task.id)
        return CancelResult(task, previous)

    @staticmethod
    def _claims(s: Session, task_id: str, attempt: int) -> int:
        """How many times ``attempt`` of the task was started before (distinct reports)."""
        return int(s.execute(_STARTS, {"task_id": task_id, "attempt": attempt}).scalar_one())


def _give_up(task: Task, attempt: int, claims: int, now: datetime) -> None:
    task.status = TaskStatus.FAILED.value
    task.attempts = max(task.attempts, attempt)
    task.error = gave_up_error(attempt, claims)
    task.finished_at = now
    if task.started_at is None:
        task.started_at = now


def _apply(task: Task, update: StatusUpdate, now: datetime) -> None:
    task.status = update.status.value
    task.attempts = max(task.attempts, update.attempt)
    if update.worker:
        task.worker = update.worker
    if update.status is TaskStatus.IN_PROGRESS and task.started_at is None:
        task.started_at = now
    if update.status.is_final:
        task.finished_at = now
        if task.started_at is None:
            task.started_at = now
    if update.result is not None:
        task.result = update.result
    if update.error is not None:
        task.error = update.error
    elif update.status is TaskStatus.DONE:
        task.error = None
