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

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Select, bindparam, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Session
from sqlalchemy.sql.expression import ClauseElement

from tasklab_api.orm import Base, CallbackNonce, Task, TaskEvent, TaskRow
from tasklab_api.store.prepared import Statements
from tasklab_common.messages import StatusUpdate
from tasklab_common.models import TaskStatus, Verdict, supersedes

#: Default of the api's ``DELIVERY_LIMIT``.
DEFAULT_DELIVERY_LIMIT = 5
#: How the error of a task the api itself marked FAILED begins.
GAVE_UP = "gave up:"


class Refused(Exception):
    """A write transaction that refused its work before writing anything (the store's
    writer need not roll back what ran before it in the same transaction)."""


class ReplayError(Refused):
    """A signed request's nonce was seen before."""


class TaskNotFound(Refused):
    pass


class NotCancellable(Refused):
    def __init__(self, status: TaskStatus) -> None:
        super().__init__(f"task is already {status}")
        self.status = status


@dataclass(frozen=True)
class UpdateResult:
    """What a worker's report did."""

    task: TaskRow
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
    task: TaskRow
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


# Every statement of a status report, built once, in Core and run prepared (see
# tasklab_api.store.prepared): the ORM's identity map, unit of work and autoflush, and
# then SQLAlchemy's per-statement work, cost more than the database's own (the task is
# read into a TaskRow, changed in Python and written back with one UPDATE).
_TASKS = Base.metadata.tables[Task.__tablename__]
_NONCES = Base.metadata.tables[CallbackNonce.__tablename__]
_EVENTS = Base.metadata.tables[TaskEvent.__tablename__]
#: The columns a transition may change (every one but the key, the creation, the params).
_MUTABLE = (
    "status",
    "result",
    "error",
    "worker",
    "attempts",
    "deliveries",
    "started_at",
    "finished_at",
    "updated_at",
)
_TASK_ROW = select(*_TASKS.c).where(_TASKS.c.id == bindparam("task_id"))
TASK_BY_ID = select(Task).where(Task.id == bindparam("task_id"))
_TASK_FOR_UPDATE = TASK_BY_ID.with_for_update()


def _record_nonce(dialect: Dialect) -> ClauseElement:
    """A nonce recorded unless it is there already (then nothing is written, nothing
    returned, and nothing fails: the transaction goes on)."""
    dialect_insert = postgresql.insert if dialect.name == "postgresql" else sqlite.insert
    return dialect_insert(_NONCES).on_conflict_do_nothing().returning(_NONCES.c.nonce)


_STATEMENTS = Statements(
    task_row=_TASK_ROW,
    task_row_locked=_TASK_ROW.with_for_update(),
    update_task=update(_TASKS)
    .where(_TASKS.c.id == bindparam("task_id"))
    .values({name: bindparam(name) for name in _MUTABLE}),
    insert_event=insert(_EVENTS),
    event_seen=select(_EVENTS.c.event_id).where(_EVENTS.c.event_id == bindparam("event_id")),
    starts=select(func.count())
    .select_from(_EVENTS)
    .where(
        _EVENTS.c.task_id == bindparam("task_id"),
        _EVENTS.c.attempt == bindparam("attempt"),
        _EVENTS.c.status == TaskStatus.IN_PROGRESS.value,
    ),
    record_nonce=_record_nonce,
)
assert tuple(_TASKS.c.keys()) == tuple(f.name for f in dataclasses.fields(TaskRow))


def locking(postgres: bool) -> Select[Task]:
    """The task ``:task_id`` (ORM), its row locked (PostgreSQL; SQLite has one writer)."""
    return _TASK_FOR_UPDATE if postgres else TASK_BY_ID


def record_nonce(conn: Connection, nonce: str, now: datetime) -> None:
    """Add a signed request's nonce to the transaction; :class:`ReplayError` (nothing
    written) when it was seen before."""
    recorded = _STATEMENTS.on(conn)["record_nonce"].first(conn, {"nonce": nonce, "seen_at": now})
    if recorded is None:
        raise ReplayError(nonce)


class Transitions:
    """The bodies of the transactions that change a task's status.

    ``notify(connection, task_ids)`` is called inside each transaction that changes
    tasks, once (the announcer's PostgreSQL NOTIFY).
    """

    def __init__(
        self,
        *,
        postgres: bool,
        delivery_limit: int,
        notify: Callable[[Connection, Sequence[str]], None],
    ) -> None:
        self.postgres = postgres
        self._row = "task_row_locked" if postgres else "task_row"
        self.delivery_limit = delivery_limit
        self._notify = notify

    def locked(self, conn: Connection, task_id: str) -> TaskRow | None:
        """The task's row, locked (PostgreSQL) until the transaction ends."""
        row = _STATEMENTS.on(conn)[self._row].first(conn, {"task_id": task_id})
        return None if row is None else TaskRow(*row)

    def report(
        self, s: Session, nonce: str, updates: Sequence[StatusUpdate], now: datetime
    ) -> list[UpdateResult | None]:
        """The transaction of one signed request: its nonce recorded (:class:`ReplayError`
        when seen before, and nothing else done), then each report applied in order
        (None for an unknown task); one announcement for the tasks that changed."""
        conn = s.connection()
        record_nonce(conn, nonce, now)
        results = [self.apply_update(conn, update, now) for update in updates]
        changed = [r.task.id for r in results if r is not None and r.changed]
        if changed:
            self._notify(conn, changed)
        return results

    def apply_update(
        self, conn: Connection, update: StatusUpdate, now: datetime
    ) -> UpdateResult | None:
        """Record a report and apply it if it moves the task forward; None for an
        unknown task. Not announced: see :meth:`report`."""
        task = self.locked(conn, update.task_id)
        if task is None:
            return None
        statements = _STATEMENTS.on(conn)
        previous = TaskStatus(task.status)
        if statements["event_seen"].first(conn, {"event_id": update.event_id}) is not None:
            return UpdateResult(task, Verdict.DUPLICATE, previous)
        applied = supersedes(update.status, update.attempt, previous, task.attempts)
        verdict = Verdict.APPLIED if applied else Verdict.STALE
        delivered = update.status is TaskStatus.IN_PROGRESS and not previous.is_final
        if delivered:
            claims = self._claims(conn, update.task_id, update.attempt)
            task = dataclasses.replace(
                task, deliveries=task.deliveries + 1, worker=update.worker or task.worker
            )
            if claims >= self.delivery_limit:
                verdict = Verdict.GAVE_UP
                task = _give_up(task, update.attempt, claims + 1, now)
        if verdict is Verdict.APPLIED:
            task = _apply(task, update, now)
        changed = verdict in (Verdict.APPLIED, Verdict.GAVE_UP) or delivered
        if changed:
            task = dataclasses.replace(task, updated_at=now)
            _write(conn, task)
        statements["insert_event"].run(  # recorded whatever the report did
            conn,
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
        return UpdateResult(task, verdict, previous, changed=changed)

    def cancel(self, s: Session, task_id: str, now: datetime) -> CancelResult:
        conn = s.connection()
        task = self.locked(conn, task_id)
        if task is None:
            raise TaskNotFound(task_id)
        previous = TaskStatus(task.status)
        if previous.is_final:
            raise NotCancellable(previous)
        task = dataclasses.replace(
            task, status=TaskStatus.CANCELLED.value, finished_at=now, updated_at=now
        )
        _write(conn, task)
        self._notify(conn, [task.id])
        return CancelResult(task, previous)

    @staticmethod
    def _claims(conn: Connection, task_id: str, attempt: int) -> int:
        """How many times ``attempt`` of the task was started before (distinct reports)."""
        row = _STATEMENTS.on(conn)["starts"].first(conn, {"task_id": task_id, "attempt": attempt})
        assert row is not None
        return int(row[0])


def _write(conn: Connection, task: TaskRow) -> None:
    """The task's changeable columns as ``task`` has them."""
    values: dict[str, Any] = {name: getattr(task, name) for name in _MUTABLE}
    _STATEMENTS.on(conn)["update_task"].run(conn, {"task_id": task.id, **values})


def _give_up(task: TaskRow, attempt: int, claims: int, now: datetime) -> TaskRow:
    return dataclasses.replace(
        task,
        status=TaskStatus.FAILED.value,
        attempts=max(task.attempts, attempt),
        error=gave_up_error(attempt, claims),
        finished_at=now,
        started_at=task.started_at or now,
    )


def _apply(task: TaskRow, update: StatusUpdate, now: datetime) -> TaskRow:
    started_at = task.started_at
    finished_at = task.finished_at
    if update.status is TaskStatus.IN_PROGRESS and started_at is None:
        started_at = now
    if update.status.is_final:
        finished_at = now
        started_at = started_at or now
    error = task.error
    if update.error is not None:
        error = update.error
    elif update.status is TaskStatus.DONE:
        error = None
    return dataclasses.replace(
        task,
        status=update.status.value,
        attempts=max(task.attempts, update.attempt),
        worker=update.worker or task.worker,
        started_at=started_at,
        finished_at=finished_at,
        result=update.result if update.result is not None else task.result,
        error=error,
    )
