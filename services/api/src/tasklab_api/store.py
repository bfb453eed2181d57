"""The task store: the only writer of task state.

Every status change goes through :meth:`TaskStore.apply_update` (workers' reports)
or :meth:`TaskStore.cancel` (users), both single transactions that lock the task's
row, so concurrent reports from several api processes cannot move a status
backwards.
"""

from __future__ import annotations

import asyncio
import functools
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Generic, TypeVar, cast

from sqlalchemy import (
    ColumnElement,
    Select,
    and_,
    bindparam,
    case,
    delete,
    func,
    insert,
    or_,
    select,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session, sessionmaker

from tasklab_api.db import create_sync_engine, engine_of, read_session_factory
from tasklab_api.orm import Base, CallbackNonce, Task, TaskEvent
from tasklab_common.messages import StatusUpdate, TaskParams, utcnow
from tasklab_common.models import Method, TaskKind, TaskStatus, supersedes
from tasklab_common.queues import QUEUE_OF_METHOD

T = TypeVar("T")
Item = TypeVar("Item")
#: A batched call's answer to one caller: its result, or the exception it gets.
Outcome = tuple[Any, Exception | None]


class ReplayError(Exception):
    """A callback nonce was seen before."""


class TaskNotFound(Exception):
    pass


class NotCancellable(Exception):
    def __init__(self, status: TaskStatus) -> None:
        super().__init__(f"task is already {status}")
        self.status = status


@dataclass(frozen=True)
class UpdateOutcome:
    task: Task
    applied: bool
    duplicate: bool
    previous: TaskStatus
    #: The report was one delivery too many: the task was marked FAILED instead, and
    #: its message is to be dead-lettered.
    gave_up: bool = False
    #: The task row changed: applied, given up, or one more delivery of a task that
    #: is not final (its worker then is the one that took it). Anything else, e.g. a
    #: late report on a finished task, writes nothing and is not announced.
    changed: bool = False

    @property
    def proceed(self) -> bool:
        return not TaskStatus(self.task.status).is_final


@dataclass(frozen=True)
class CancelOutcome:
    task: Task
    previous: TaskStatus


@dataclass(frozen=True)
class WorkerRow:
    name: str
    running: int
    done: int
    failed: int
    last_seen: datetime


#: Default of :attr:`TaskStore.delivery_limit` (the api's ``DELIVERY_LIMIT``).
DEFAULT_DELIVERY_LIMIT = 5


#: How the error of a task the api itself marked FAILED begins.
GAVE_UP = "gave up:"
#: Most final tasks one housekeeping run deletes (the next run takes the rest).
PURGE_BATCH = 5000
#: Methods whose retry is a new message at the back of the queue (Celery's retry): a
#: RETRYING task of theirs waits like a PENDING one, for as long as the backlog lasts.
REQUEUED_RETRIES = (Method.CELERY.value, Method.SYNC.value)


def stuck_error(silent: timedelta) -> str:
    return (
        f"{GAVE_UP} no report for {silent.total_seconds():.0f} s, past the task's duration "
        "and the grace period (its worker vanished?); marked FAILED by housekeeping"
    )


#: How the error of a PENDING task whose message is gone begins.
NEVER_DELIVERED = f"{GAVE_UP} never delivered"
#: How the error of a Celery task whose retry message is gone begins.
RETRY_GONE = f"{GAVE_UP} its retry was never delivered"


def orphan_error(queue: str, *, retrying: bool = False) -> str:
    if retrying:
        return (
            f"{RETRY_GONE}, and queue {queue} stayed empty: the retry message is gone "
            "(purged?); marked FAILED by housekeeping"
        )
    return (
        f"{NEVER_DELIVERED}, and queue {queue} stayed empty: its message is gone "
        "(purged, or the api stopped before the broker confirmed it, so the submission "
        "was never answered); marked FAILED by housekeeping"
    )


def _silent_running(cutoff: datetime) -> ColumnElement[bool]:
    """Tasks a worker should be running, silent since before ``cutoff``: IN_PROGRESS, or
    RETRYING in place (the consumer; a Celery retry is a message in the queue)."""
    return and_(
        Task.updated_at < cutoff,
        or_(
            Task.status == TaskStatus.IN_PROGRESS.value,
            and_(
                Task.status == TaskStatus.RETRYING.value,
                Task.method.not_in(REQUEUED_RETRIES),
            ),
        ),
    )


def _waiting_for_message(cutoff: datetime) -> ColumnElement[bool]:
    """Tasks whose message waits in a queue since before ``cutoff``: PENDING, never
    delivered; or a Celery task RETRYING (its retry is a new message)."""
    return or_(
        and_(
            Task.status == TaskStatus.PENDING.value,
            Task.deliveries == 0,
            Task.created_at < cutoff,
        ),
        and_(
            Task.status == TaskStatus.RETRYING.value,
            Task.method.in_(REQUEUED_RETRIES),
            Task.updated_at < cutoff,
        ),
    )


def gave_up_error(attempt: int, claims: int) -> str:
    return (
        f"{GAVE_UP} attempt {attempt} was delivered {claims} times and never reported an "
        "outcome (each run ended without a report: its worker died or was killed); "
        "the message was dead-lettered"
    )


class TaskStore:
    """Reads and writes tasks.

    ``delivery_limit``: how many times one attempt of a task may be started
    (``IN_PROGRESS`` reported) without any outcome. A task that kills the process
    running it is redelivered each time; the start after the last allowed one marks
    it FAILED and tells the worker to dead-letter the message.
    """

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        postgres: bool,
        delivery_limit: int = DEFAULT_DELIVERY_LIMIT,
        writer: StoreWriter | None = None,
    ) -> None:
        self._sessions = sessions
        self._reads = read_session_factory(sessions)
        self._postgres = postgres
        self.delivery_limit = delivery_limit
        self._writer = writer or StoreWriter.for_sessions(sessions, postgres=postgres)
        self._inserts = _GroupInsert(self._writer)

    def close(self) -> None:
        """Stop the writer threads and close their connections."""
        self._writer.close()

    def session(self) -> AsyncSession:
        return self._sessions()

    def read_session(self) -> AsyncSession:
        """A session for reads only (e.g. :mod:`tasklab_api.activity`)."""
        return self._reads()

    async def create(
        self, method: Method, kind: TaskKind, params: TaskParams, *, label: str | None = None
    ) -> Task:
        now = utcnow()
        stored = params.model_dump(mode="json", exclude_none=True)
        if label:
            stored["label"] = label
        task = Task(
            id=str(uuid.uuid4()),
            method=method.value,
            kind=kind.value,
            status=TaskStatus.PENDING.value,
            params=stored,
            result=None,
            error=None,
            worker=None,
            attempts=0,
            deliveries=0,
            created_at=now,
            updated_at=now,
        )
        await self._inserts.insert(task)
        return task

    async def discard(self, task_id: str) -> bool:
        """Remove a task whose publish failed, unless a worker has reported on it.

        A publish that timed out waiting for the broker's confirm may still have been
        delivered: a task a worker already started was published after all, and is
        kept (False is returned: the caller treats it as accepted).
        """

        def transaction(s: Session) -> bool:
            gone = s.execute(
                delete(Task).where(
                    Task.id == task_id,
                    Task.status == TaskStatus.PENDING.value,
                    Task.deliveries == 0,
                )
            )
            return bool(getattr(gone, "rowcount", 0))

        return await self._writer.run(transaction)

    async def get(self, task_id: str) -> Task | None:
        async with self._reads() as s:
            return (await s.execute(_TASK, {"task_id": task_id})).scalar_one_or_none()

    async def list_tasks(
        self,
        *,
        limit: int,
        offset: int = 0,
        method: Sequence[Method] = (),
        status: Sequence[TaskStatus] = (),
        kind: Sequence[TaskKind] = (),
        updated_since: datetime | None = None,
    ) -> tuple[list[Task], int]:
        conds: list[Any] = []
        if method:
            conds.append(Task.method.in_([m.value for m in method]))
        if status:
            conds.append(Task.status.in_([st.value for st in status]))
        if kind:
            conds.append(Task.kind.in_([k.value for k in kind]))
        if updated_since is not None:
            conds.append(Task.updated_at >= updated_since)
        async with self._reads() as s:
            total = (
                await s.execute(select(func.count()).select_from(Task).where(*conds))
            ).scalar_one()
            rows = (
                await s.execute(
                    select(Task).where(*conds).order_by(Task.num.desc()).limit(limit).offset(offset)
                )
            ).scalars()
            return list(rows), int(total)

    def _locking(self) -> Select[Task]:
        """The task ``:task_id``, its row locked (PostgreSQL; SQLite has one writer)."""
        return _TASK_FOR_UPDATE if self._postgres else _TASK

    def _locked_sync(self, s: Session, task_id: str) -> Task | None:
        return s.execute(self._locking(), {"task_id": task_id}).scalar_one_or_none()

    async def apply_update(self, update: StatusUpdate, nonce: str) -> UpdateOutcome:
        """Apply a worker's report if it moves the task forward; record it either way.

        One transaction records the nonce and applies the report. The nonce of a report
        for an unknown task is kept too (the transaction commits, then TaskNotFound).
        """
        now = utcnow()

        def transaction(s: Session) -> UpdateOutcome | None:
            _record_nonce(s, nonce, now)
            return self._apply_update(s, update, now)

        outcome = await self._writer.run(transaction)
        if outcome is None:
            raise TaskNotFound(update.task_id)
        return outcome

    def _apply_update(
        self, s: Session, update: StatusUpdate, now: datetime
    ) -> UpdateOutcome | None:
        """The body of :meth:`apply_update`'s transaction; None for an unknown task."""
        task = self._locked_sync(s, update.task_id)
        if task is None:
            return None
        previous = TaskStatus(task.status)
        if s.execute(_EVENT_SEEN, {"event_id": update.event_id}).first() is not None:
            return UpdateOutcome(task, applied=False, duplicate=True, previous=previous)
        applied = supersedes(update.status, update.attempt, previous, task.attempts)
        gave_up = False
        delivered = update.status is TaskStatus.IN_PROGRESS and not previous.is_final
        if delivered:
            # Counted before the task changes: the query would flush a first UPDATE.
            claims = self._claims(s, update.task_id, update.attempt)
            task.deliveries += 1
            if update.worker:
                task.worker = update.worker
            if claims >= self.delivery_limit:
                gave_up, applied = True, False
                self._give_up(task, update.attempt, claims + 1, now)
        if applied:
            self._apply(task, update, now)
        changed = applied or gave_up or delivered
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
                "applied": applied,
                "reported_at": update.at,
                "received_at": now,
            },
        )
        if self._postgres and changed:
            notify_sync(s, task.id)
        return UpdateOutcome(
            task,
            applied=applied,
            duplicate=False,
            previous=previous,
            gave_up=gave_up,
            changed=changed,
        )

    @staticmethod
    def _claims(s: Session, task_id: str, attempt: int) -> int:
        """How many times ``attempt`` of the task was started before (distinct reports)."""
        return int(s.execute(_STARTS, {"task_id": task_id, "attempt": attempt}).scalar_one())

    @staticmethod
    def _give_up(task: Task, attempt: int, claims: int, now: datetime) -> None:
        task.status = TaskStatus.FAILED.value
        task.attempts = max(task.attempts, attempt)
        task.error = gave_up_error(attempt, claims)
        task.finished_at = now
        if task.started_at is None:
            task.started_at = now

    @staticmethod
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

    async def cancel(self, task_id: str) -> CancelOutcome:
        now = utcnow()

        def transaction(s: Session) -> CancelOutcome:
            task = self._locked_sync(s, task_id)
            if task is None:
                raise TaskNotFound(task_id)
            previous = TaskStatus(task.status)
            if previous.is_final:
                raise NotCancellable(previous)
            task.status = TaskStatus.CANCELLED.value
            task.finished_at = now
            task.updated_at = now
            if self._postgres:
                notify_sync(s, task.id)
            return CancelOutcome(task, previous)

        return await self._writer.run(transaction)

    async def status_counts(self) -> dict[TaskStatus, int]:
        async with self._reads() as s:
            rows = await s.execute(select(Task.status, func.count()).group_by(Task.status))
            return {TaskStatus(st): int(n) for st, n in rows.all()}

    async def worker_stats(self, since: datetime) -> list[WorkerRow]:
        """Per worker: tasks running now, done and failed; workers active since ``since``."""
        running = func.sum(case((Task.status.in_(["IN_PROGRESS", "RETRYING"]), 1), else_=0))
        done = func.sum(case((Task.status == "DONE", 1), else_=0))
        failed = func.sum(case((Task.status == "FAILED", 1), else_=0))
        q = (
            select(Task.worker, running, done, failed, func.max(Task.updated_at))
            .where(Task.worker.is_not(None))
            .group_by(Task.worker)
            .having(func.max(Task.updated_at) >= since)
        )
        async with self._reads() as s:
            return [
                WorkerRow(str(w), int(r or 0), int(d or 0), int(f or 0), last)
                for w, r, d, f, last in (await s.execute(q)).all()
            ]

    async def notify(self, task_id: str) -> None:
        """PostgreSQL: tell every api process that the task changed, on its own."""
        await self._writer.run(functools.partial(notify_sync, task_id=task_id))

    async def use_nonce(self, nonce: str) -> None:
        """Record a signed request's nonce; :class:`ReplayError` when seen before."""
        await self._writer.run(lambda s: _record_nonce(s, nonce, utcnow()))

    async def fail_stuck(self, grace: timedelta) -> list[Task]:
        """Mark FAILED the running tasks with no report for their duration + ``grace``.

        A worker reports at the start of every attempt and at its end; silence past
        the work's own duration and the grace period means the worker is gone and its
        message with it (a live worker's message would have been redelivered).
        A Celery task's RETRYING is not such silence: its retry is a message waiting in
        the queue, behind any backlog, like a PENDING task's (:func:`_silent_running`).
        """
        now = utcnow()

        def verdict(task: Task) -> str | None:
            duration = float((task.params or {}).get("duration", 0.0))
            silent = now - task.updated_at
            return stuck_error(silent) if silent > grace + timedelta(seconds=duration) else None

        return await self._fail_where(_silent_running(now - grace), verdict, now)

    async def fail_orphaned(
        self, empty_since: Mapping[str, datetime], grace: timedelta
    ) -> list[Task]:
        """Mark FAILED the waiting tasks whose message is gone.

        ``empty_since`` maps queues to the time since which the broker has reported them
        empty (no ready, no unacknowledged message) at every look. A task of such a queue
        that was waiting for its message before that time and for longer than ``grace``
        cannot have it anywhere: a ``PENDING`` task never delivered (its message was
        purged, or never published: the api stopped between the insert and the broker's
        confirm, and the submission was never answered), or a Celery task ``RETRYING``
        (its retry message was purged).
        """
        now = utcnow()
        failed = []
        for queue, since in empty_since.items():
            methods = [m.value for m, q in QUEUE_OF_METHOD.items() if q == queue]
            if not methods:
                continue

            def verdict(task: Task, queue: str = queue) -> str:
                return orphan_error(queue, retrying=task.status == TaskStatus.RETRYING.value)

            condition = and_(
                Task.method.in_(methods), _waiting_for_message(min(since, now - grace))
            )
            failed += await self._fail_where(condition, verdict, now)
        return failed

    async def _fail_where(
        self,
        condition: ColumnElement[bool],
        verdict: Callable[[Task], str | None],
        now: datetime,
    ) -> list[Task]:
        """Housekeeping: mark FAILED, with the error ``verdict`` gives (None: leave it),
        each task that meets ``condition``, one writer transaction per task, the
        condition checked again under the row's lock."""
        async with self._reads() as s:
            ids = list((await s.execute(select(Task.id).where(condition))).scalars())
        locked = self._locking().where(condition)

        def transaction(s: Session, task_id: str) -> Task | None:
            task = s.execute(locked, {"task_id": task_id}).scalar_one_or_none()
            error = verdict(task) if task is not None else None
            if task is None or error is None:
                return None
            task.status = TaskStatus.FAILED.value
            task.error = error
            task.finished_at = now
            task.updated_at = now
            if self._postgres:
                notify_sync(s, task.id)
            return task

        failed = []
        for task_id in ids:
            task = await self._writer.run(functools.partial(transaction, task_id=task_id))
            if task is not None:
                failed.append(task)
        return failed

    async def purge_history(self, older_than: timedelta) -> tuple[int, int]:
        """Delete final tasks that finished before ``older_than`` ago, and their reports.

        At most :data:`PURGE_BATCH` tasks per call. Returns (tasks, reports) deleted.
        """
        cutoff = utcnow() - older_than
        final = [st.value for st in TaskStatus if st.is_final]

        def purge(s: Session) -> tuple[int, int]:
            ids = list(
                s.execute(
                    select(Task.id)
                    .where(Task.status.in_(final), Task.finished_at < cutoff)
                    .order_by(Task.num)
                    .limit(PURGE_BATCH)
                ).scalars()
            )
            if not ids:
                return 0, 0
            events = s.execute(delete(TaskEvent).where(TaskEvent.task_id.in_(ids)))
            tasks = s.execute(delete(Task).where(Task.id.in_(ids)))
            return (
                int(getattr(tasks, "rowcount", 0) or 0),
                int(getattr(events, "rowcount", 0) or 0),
            )

        return await self._writer.run(purge)

    async def purge_nonces(self, older_than: timedelta) -> int:
        cutoff = utcnow() - older_than

        def purge(s: Session) -> int:
            res = s.execute(delete(CallbackNonce).where(CallbackNonce.seen_at < cutoff))
            return int(getattr(res, "rowcount", 0) or 0)

        return await self._writer.run(purge)

    async def ping(self) -> None:
        async with self._reads() as s:
            await s.execute(select(1))


# Statements of every status report, built once, in Core: the ORM's unit of work and
# identity map cost more than the rest of a report for rows that are never read back.
_NONCES = Base.metadata.tables[CallbackNonce.__tablename__]
_EVENTS = Base.metadata.tables[TaskEvent.__tablename__]
_TASK = select(Task).where(Task.id == bindparam("task_id"))
_TASK_FOR_UPDATE = _TASK.with_for_update()
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


def _record_nonce(s: Session, nonce: str, now: datetime) -> None:
    """Add a signed request's nonce to the transaction; :class:`ReplayError` if seen."""
    try:
        s.execute(_INSERT_NONCE, {"nonce": nonce, "seen_at": now})
    except IntegrityError:
        raise ReplayError(nonce) from None


NOTIFY_CHANNEL = "tasklab_tasks"


_NOTIFY = select(func.pg_notify(NOTIFY_CHANNEL, bindparam("task_id")))


def notify_sync(s: Session, task_id: str) -> None:
    """PostgreSQL: tell every api process that the task changed (delivered at commit)."""
    s.execute(_NOTIFY, {"task_id": task_id})


def _in_transaction(s: Session) -> bool:
    """Whether the database connection of ``s`` is still inside its transaction."""
    try:
        dbapi = s.connection().connection.dbapi_connection
    except Exception:
        return False
    return bool(getattr(dbapi, "in_transaction", True))


class StoreWriter:
    """Runs the store's write transactions as synchronous sessions on its own threads.

    Through the async driver every statement is several round trips between the
    event loop and the driver's thread, each waiting for a turn of the loop, and the
    connection (SQLite: the only writer) is held across all of them. Here a whole
    transaction is one round trip. SQLite gets one thread (one writer, as SQLite
    allows); PostgreSQL a few (row locks keep them apart). Reads stay on the async
    engine, in read-only sessions: on SQLite a deferred BEGIN and WAL, so they neither
    wait for nor block the writer.

    ``group`` (SQLite): the transactions that arrive while one runs wait and then run
    together in one (group commit), each in its own savepoint, so that one failing
    only rolls back itself and every caller gets its own result or exception, after
    the commit. Under load (many workers reporting at once) this saves a BEGIN, a
    COMMIT and a hop to the thread per transaction. PostgreSQL's writers do not group:
    their transactions lock rows, and a group would hold its locks longer.
    """

    POSTGRES_THREADS = 4
    #: Most transactions run together in one group.
    MAX_GROUP = 64

    def __init__(self, engine: Engine, threads: int, *, group: bool = False) -> None:
        self._engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="store-writer")
        self._groups = _Batches(self._run_group, self.MAX_GROUP, "store-writes") if group else None

    @classmethod
    def for_sessions(
        cls, sessions: async_sessionmaker[AsyncSession], *, postgres: bool
    ) -> StoreWriter:
        """A writer on the database of ``sessions`` (bound to an async engine)."""
        threads = cls.POSTGRES_THREADS if postgres else 1
        engine = create_sync_engine(engine_of(sessions).url, pool_size=threads)
        return cls(engine, threads, group=not postgres)

    async def run(self, work: Callable[[Session], T]) -> T:
        """``work(session)`` in one transaction on a writer thread; its result.

        The result comes after the commit. A caller cancelled meanwhile gets
        ``CancelledError`` at once, but its write is not undone: it still runs and
        commits (or fails) on the writer thread.
        """
        if self._groups is None:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._pool, self._transaction, work)
        return cast(T, await self._groups.put(work))

    def _transaction(self, work: Callable[[Session], T]) -> T:
        with self._sessions() as s, s.begin():
            return work(s)

    def _grouped(self, works: list[Callable[[Session], Any]]) -> list[Outcome]:
        """One transaction, a savepoint per work; each work's (result, exception)."""
        outcomes: list[Outcome] = []
        with self._sessions() as s, s.begin():
            for work in works:
                try:
                    with s.begin_nested():
                        value = work(s)
                except Exception as exc:
                    if not _in_transaction(s):
                        # SQLite ended the whole transaction (disk full, I/O error...):
                        # the group's earlier writes are gone too. Every caller gets the
                        # error; nothing more runs outside the transaction.
                        cause = exc.__context__
                        raise cause if isinstance(cause, Exception) else exc from None
                    outcomes.append((None, exc))
                else:
                    outcomes.append((value, None))
                # Each result keeps its own copy of the rows it returns: a later work
                # of the group changing the same task must not change an earlier result.
                s.expunge_all()
        return outcomes

    async def _run_group(self, works: list[Callable[[Session], Any]]) -> list[Outcome]:
        if len(works) == 1:
            return [await self._alone(works[0])]
        try:
            return await asyncio.get_running_loop().run_in_executor(
                self._pool, self._grouped, works
            )
        except Exception as exc:
            # The group's own BEGIN or COMMIT failed: nothing of it was written, and
            # every caller gets the error (as each would have alone).
            return [(None, exc)] * len(works)

    async def _alone(self, work: Callable[[Session], Any]) -> Outcome:
        loop = asyncio.get_running_loop()
        return await _outcome(loop.run_in_executor(self._pool, self._transaction, work))

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self._engine.dispose()


class _GroupInsert:
    """Inserts new tasks in as few transactions as there is time for (group commit).

    A submission's task goes into the next transaction; while one transaction runs,
    the tasks of the submissions arriving meanwhile wait and are then inserted
    together, with one statement. Under load this replaces a transaction per task
    (several round trips to the database each) by one per batch; alone, a task is
    inserted at once as before. If a batch fails, its tasks are retried one by one,
    so that one bad row fails only its own submission.
    """

    MAX_BATCH = 200

    def __init__(self, writer: StoreWriter) -> None:
        self._writer = writer
        self._batches = _Batches(self._insert, self.MAX_BATCH, "task-inserts")

    async def insert(self, task: Task) -> None:
        await self._batches.put(task)

    async def _insert(self, tasks: list[Task]) -> list[Outcome]:
        try:
            await self._write(tasks)
        except Exception as exc:
            if len(tasks) == 1:
                return [(None, exc)]
            return [await _outcome(self._write([task])) for task in tasks]
        return [(None, None)] * len(tasks)

    async def _write(self, tasks: list[Task]) -> None:
        await self._writer.run(lambda s: s.add_all(tasks))


class _Batches(Generic[Item]):
    """Callers each put an item and wait; the items waiting are handed to ``handle``
    in batches of at most ``limit``, one batch at a time, and each caller gets its own
    outcome. A caller cancelled meanwhile does not take its item back."""

    def __init__(
        self, handle: Callable[[list[Item]], Awaitable[list[Outcome]]], limit: int, name: str
    ) -> None:
        self._handle = handle
        self._limit = limit
        self._name = name
        self._pending: list[tuple[Item, asyncio.Future[Any]]] = []
        self._drainer: asyncio.Task[None] | None = None

    async def put(self, item: Item) -> Any:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        # A caller cancelled meanwhile never awaits its future: mark a failure as seen.
        future.add_done_callback(lambda f: None if f.cancelled() else f.exception())
        self._pending.append((item, future))
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.create_task(self._drain(), name=self._name)
        return await asyncio.shield(future)

    async def _drain(self) -> None:
        while self._pending:
            batch = self._pending[: self._limit]
            del self._pending[: self._limit]
            outcomes = await self._handle([item for item, _ in batch])
            for (_, future), (value, error) in zip(batch, outcomes, strict=True):
                if future.done():
                    continue
                if error is None:
                    future.set_result(value)
                else:
                    future.set_exception(error)


async def _outcome(call: Awaitable[Any]) -> Outcome:
    """What ``call`` returns, or the exception it raises, as an :data:`Outcome`."""
    try:
        return await call, None
    except Exception as exc:
        return None, exc
