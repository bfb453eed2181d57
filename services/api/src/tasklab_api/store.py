"""The task store: the only writer of task state.

Every status change goes through :meth:`TaskStore.apply_update` (workers' reports)
or :meth:`TaskStore.cancel` (users), both single transactions that lock the task's
row, so concurrent reports from several api processes cannot move a status
backwards.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import case, delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tasklab_api.orm import CallbackNonce, Task, TaskEvent
from tasklab_common.messages import StatusUpdate, TaskParams, utcnow
from tasklab_common.models import Method, TaskKind, TaskStatus, supersedes


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
#: Statuses of a task that a worker is (supposed to be) running.
RUNNING = (TaskStatus.IN_PROGRESS.value, TaskStatus.RETRYING.value)


def stuck_error(silent: timedelta) -> str:
    return (
        f"{GAVE_UP} no report for {silent.total_seconds():.0f} s, past the task's duration "
        "and the grace period (its worker vanished?); marked FAILED by housekeeping"
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
    ) -> None:
        self._sessions = sessions
        self._postgres = postgres
        self.delivery_limit = delivery_limit
        self._inserts = _GroupInsert(sessions)

    def session(self) -> AsyncSession:
        return self._sessions()

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
        async with self._sessions() as s, s.begin():
            gone = await s.execute(
                delete(Task).where(
                    Task.id == task_id,
                    Task.status == TaskStatus.PENDING.value,
                    Task.deliveries == 0,
                )
            )
            return bool(getattr(gone, "rowcount", 0))

    async def get(self, task_id: str) -> Task | None:
        async with self._sessions() as s:
            return (await s.execute(select(Task).where(Task.id == task_id))).scalar_one_or_none()

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
        async with self._sessions() as s:
            total = (
                await s.execute(select(func.count()).select_from(Task).where(*conds))
            ).scalar_one()
            rows = (
                await s.execute(
                    select(Task).where(*conds).order_by(Task.num.desc()).limit(limit).offset(offset)
                )
            ).scalars()
            return list(rows), int(total)

    async def _locked(self, s: AsyncSession, task_id: str) -> Task | None:
        q = select(Task).where(Task.id == task_id)
        if self._postgres:
            q = q.with_for_update()
        return (await s.execute(q)).scalar_one_or_none()

    async def apply_update(self, update: StatusUpdate, nonce: str) -> UpdateOutcome:
        """Apply a worker's report if it moves the task forward; record it either way.

        One transaction records the nonce and applies the report. The nonce of a report
        for an unknown task is kept too (the transaction commits, then TaskNotFound).
        """
        now = utcnow()
        async with self._sessions() as s, s.begin():
            await _record_nonce(s, nonce, now)
            outcome = await self._apply_update(s, update, now)
        if outcome is None:
            raise TaskNotFound(update.task_id)
        return outcome

    async def _apply_update(
        self, s: AsyncSession, update: StatusUpdate, now: datetime
    ) -> UpdateOutcome | None:
        """The body of :meth:`apply_update`'s transaction; None for an unknown task."""
        task = await self._locked(s, update.task_id)
        if task is None:
            return None
        previous = TaskStatus(task.status)
        if await s.get(TaskEvent, update.event_id) is not None:
            return UpdateOutcome(task, applied=False, duplicate=True, previous=previous)
        applied = supersedes(update.status, update.attempt, previous, task.attempts)
        gave_up = False
        if update.status is TaskStatus.IN_PROGRESS and not previous.is_final:
            task.deliveries += 1
            if update.worker:
                task.worker = update.worker
            claims = await self._claims(s, update.task_id, update.attempt)
            if claims >= self.delivery_limit:
                gave_up, applied = True, False
                self._give_up(task, update.attempt, claims + 1, now)
        if applied:
            self._apply(task, update, now)
        if applied or update.status is TaskStatus.IN_PROGRESS:
            task.updated_at = now
        s.add(
            TaskEvent(
                event_id=update.event_id,
                task_id=update.task_id,
                status=update.status.value,
                attempt=update.attempt,
                worker=update.worker,
                applied=applied,
                reported_at=update.at,
                received_at=now,
            )
        )
        if self._postgres:
            await notify(s, task.id)
        return UpdateOutcome(
            task, applied=applied, duplicate=False, previous=previous, gave_up=gave_up
        )

    @staticmethod
    async def _claims(s: AsyncSession, task_id: str, attempt: int) -> int:
        """How many times ``attempt`` of the task was started before (distinct reports)."""
        q = select(func.count()).where(
            TaskEvent.task_id == task_id,
            TaskEvent.attempt == attempt,
            TaskEvent.status == TaskStatus.IN_PROGRESS.value,
        )
        return int((await s.execute(q)).scalar_one())

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
        async with self._sessions() as s, s.begin():
            task = await self._locked(s, task_id)
            if task is None:
                raise TaskNotFound(task_id)
            previous = TaskStatus(task.status)
            if previous.is_final:
                raise NotCancellable(previous)
            task.status = TaskStatus.CANCELLED.value
            task.finished_at = now
            task.updated_at = now
            if self._postgres:
                await notify(s, task.id)
        return CancelOutcome(task, previous)

    async def status_counts(self) -> dict[TaskStatus, int]:
        async with self._sessions() as s:
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
        async with self._sessions() as s:
            return [
                WorkerRow(str(w), int(r or 0), int(d or 0), int(f or 0), last)
                for w, r, d, f, last in (await s.execute(q)).all()
            ]

    async def use_nonce(self, nonce: str) -> None:
        """Record a signed request's nonce; :class:`ReplayError` when seen before."""
        async with self._sessions() as s, s.begin():
            await _record_nonce(s, nonce, utcnow())

    async def fail_stuck(self, grace: timedelta) -> list[Task]:
        """Mark FAILED the running tasks with no report for their duration + ``grace``.

        A worker reports at the start of every attempt and at its end; silence past
        the work's own duration and the grace period means the worker is gone and its
        message with it (a live worker's message would have been redelivered).
        """
        now = utcnow()
        async with self._sessions() as s:
            candidates = (
                await s.execute(
                    select(Task.id).where(Task.status.in_(RUNNING), Task.updated_at < now - grace)
                )
            ).scalars()
            ids = list(candidates)
        failed = []
        for task_id in ids:
            async with self._sessions() as s, s.begin():
                task = await self._locked(s, task_id)
                if task is None or task.status not in RUNNING:
                    continue
                duration = float((task.params or {}).get("duration", 0.0))
                silent = now - task.updated_at
                if silent <= grace + timedelta(seconds=duration):
                    continue
                task.status = TaskStatus.FAILED.value
                task.error = stuck_error(silent)
                task.finished_at = now
                task.updated_at = now
                if self._postgres:
                    await notify(s, task.id)
            failed.append(task)
        return failed

    async def purge_history(self, older_than: timedelta) -> tuple[int, int]:
        """Delete final tasks that finished before ``older_than`` ago, and their reports.

        At most :data:`PURGE_BATCH` tasks per call. Returns (tasks, reports) deleted.
        """
        cutoff = utcnow() - older_than
        final = [st.value for st in TaskStatus if st.is_final]
        async with self._sessions() as s, s.begin():
            ids = list(
                (
                    await s.execute(
                        select(Task.id)
                        .where(Task.status.in_(final), Task.finished_at < cutoff)
                        .order_by(Task.num)
                        .limit(PURGE_BATCH)
                    )
                ).scalars()
            )
            if not ids:
                return 0, 0
            events = await s.execute(delete(TaskEvent).where(TaskEvent.task_id.in_(ids)))
            tasks = await s.execute(delete(Task).where(Task.id.in_(ids)))
            return (
                int(getattr(tasks, "rowcount", 0) or 0),
                int(getattr(events, "rowcount", 0) or 0),
            )

    async def purge_nonces(self, older_than: timedelta) -> int:
        async with self._sessions() as s, s.begin():
            res = await s.execute(
                delete(CallbackNonce).where(CallbackNonce.seen_at < utcnow() - older_than)
            )
            return int(getattr(res, "rowcount", 0) or 0)

    async def ping(self) -> None:
        async with self._sessions() as s:
            await s.execute(select(1))


async def _record_nonce(s: AsyncSession, nonce: str, now: datetime) -> None:
    """Add a signed request's nonce to the transaction; :class:`ReplayError` if seen."""
    s.add(CallbackNonce(nonce=nonce, seen_at=now))
    try:
        await s.flush()
    except IntegrityError:
        raise ReplayError(nonce) from None


NOTIFY_CHANNEL = "tasklab_tasks"


async def notify(s: AsyncSession, task_id: str) -> None:
    """PostgreSQL: tell every api process (delivered at commit)."""
    await s.execute(select(func.pg_notify(NOTIFY_CHANNEL, task_id)))


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

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions
        self._pending: list[tuple[Task, asyncio.Future[None]]] = []
        self._runner: asyncio.Task[None] | None = None

    async def insert(self, task: Task) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((task, future))
        if self._runner is None or self._runner.done():
            self._runner = asyncio.create_task(self._drain(), name="task-inserts")
        await asyncio.shield(future)

    async def _drain(self) -> None:
        while self._pending:
            batch = self._pending[: self.MAX_BATCH]
            del self._pending[: self.MAX_BATCH]
            try:
                await self._write([task for task, _ in batch])
            except Exception as exc:
                if len(batch) == 1:
                    _settle(batch[0][1], exc)
                    continue
                for task, future in batch:
                    try:
                        await self._write([task])
                    except Exception as single:
                        _settle(future, single)
                    else:
                        _settle(future, None)
            else:
                for _, future in batch:
                    _settle(future, None)

    async def _write(self, tasks: list[Task]) -> None:
        async with self._sessions() as s, s.begin():
            s.add_all(tasks)


def _settle(future: asyncio.Future[None], exc: BaseException | None) -> None:
    if future.done():
        return
    if exc is None:
        future.set_result(None)
    else:
        future.set_exception(exc)
