"""The task store: the only reader and writer of tasks (:class:`TaskStore`).

Reads run on the async engine in read-only sessions; every write is one transaction
on the store's writer (:mod:`.writer`). Status changes follow :mod:`.transitions`,
the periodic clean-up is :mod:`.housekeeping`, and every change is announced to the
live streams by the store itself (:mod:`.notify`): its callers never announce.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import case, delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session

from tasklab_api.db import read_session_factory
from tasklab_api.events import EventHub
from tasklab_api.orm import Task
from tasklab_api.store.housekeeping import Housekeeping
from tasklab_api.store.notify import Announcer
from tasklab_api.store.transitions import (
    DEFAULT_DELIVERY_LIMIT,
    TASK_BY_ID,
    CancelResult,
    TaskNotFound,
    Transitions,
    UpdateResult,
    record_nonce,
)
from tasklab_api.store.writer import GroupInsert, StoreWriter
from tasklab_common.messages import StatusUpdate, TaskParams, utcnow
from tasklab_common.models import Method, TaskKind, TaskStatus


@dataclass(frozen=True)
class WorkerRow:
    name: str
    running: int
    done: int
    failed: int
    last_seen: datetime


class TaskStore:
    """Reads and writes tasks.

    ``delivery_limit``: how many times one attempt of a task may be started
    (``IN_PROGRESS`` reported) without any outcome (see :mod:`.transitions`).
    ``hub``: this process's live streams, which the store tells of every change.
    """

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        postgres: bool,
        delivery_limit: int = DEFAULT_DELIVERY_LIMIT,
        hub: EventHub | None = None,
        writer: StoreWriter | None = None,
    ) -> None:
        self._reads = read_session_factory(sessions)
        self._writer = writer or StoreWriter.for_sessions(sessions, postgres=postgres)
        self._inserts = GroupInsert(self._writer)
        self._announcer = Announcer(self._writer, postgres=postgres, hub=hub)
        self._transitions = Transitions(
            postgres=postgres,
            delivery_limit=delivery_limit,
            notify=self._announcer.in_transaction,
        )
        #: The periodic sweeps (stuck and orphaned tasks, old history, old nonces).
        self.housekeeping = Housekeeping(
            self._writer, self._reads, self._announcer, postgres=postgres
        )

    @property
    def delivery_limit(self) -> int:
        return self._transitions.delivery_limit

    @delivery_limit.setter
    def delivery_limit(self, limit: int) -> None:
        self._transitions.delivery_limit = limit

    def close(self) -> None:
        """Stop the writer threads and close their connections."""
        self._writer.close()

    def read_session(self) -> AsyncSession:
        """A session for reads only (e.g. :mod:`tasklab_api.activity`)."""
        return self._reads()

    # ------------------------------------------------------------------ submissions

    async def create(
        self, method: Method, kind: TaskKind, params: TaskParams, *, label: str | None = None
    ) -> Task:
        """Insert a new ``PENDING`` task (not announced: see :meth:`submit`)."""
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

    async def submit(
        self,
        method: Method,
        kind: TaskKind,
        params: TaskParams,
        publish: Callable[[Task], Awaitable[None]],
        *,
        label: str | None = None,
    ) -> Task:
        """A new task, handed to the broker by ``publish``, then announced.

        When ``publish`` raises, the task is removed again and the exception goes on to
        the caller: nothing was accepted. Unless a worker has reported on it already:
        the broker did take it (its confirm came too late), and it counts as accepted.
        """
        task = await self.create(method, kind, params, label=label)
        try:
            await publish(task)
        except Exception:
            if await self.discard(task.id):
                raise
            task = await self.get(task.id) or task
        await self._announcer.announce(task)
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

    # ------------------------------------------------------------------ status changes

    async def apply_update(self, update: StatusUpdate, nonce: str) -> UpdateResult:
        """Apply a worker's report if it moves the task forward; record it either way.

        One transaction records the nonce and applies the report. The nonce of a report
        for an unknown task is kept too (the transaction commits, then TaskNotFound).
        """
        (result,) = await self.apply_updates([update], nonce)
        if result is None:
            raise TaskNotFound(update.task_id)
        return result

    async def apply_updates(
        self, updates: Sequence[StatusUpdate], nonce: str
    ) -> list[UpdateResult | None]:
        """The reports of one signed request, in order, in one transaction with its
        nonce (:class:`ReplayError`: none is applied); None for a task the store does
        not know. The tasks they changed are announced once, after the commit."""
        now = utcnow()
        results = await self._writer.run(lambda s: self._transitions.report(s, nonce, updates, now))
        self._announcer.committed(*(r.task for r in results if r is not None and r.changed))
        return results

    async def cancel(self, task_id: str) -> CancelResult:
        """Mark a task that is not final CANCELLED (NotCancellable when it is)."""
        now = utcnow()
        result = await self._writer.run(
            lambda s: self._transitions.cancel(s, task_id, now),
        )
        self._announcer.committed(result.task)
        return result

    async def use_nonce(self, nonce: str) -> None:
        """Record a signed request's nonce; :class:`ReplayError` when seen before."""
        await self._writer.run(lambda s: record_nonce(s.connection(), nonce, utcnow()))

    # ------------------------------------------------------------------ reads

    async def get(self, task_id: str) -> Task | None:
        async with self._reads() as s:
            return (await s.execute(TASK_BY_ID, {"task_id": task_id})).scalar_one_or_none()

    async def get_many(self, task_ids: Sequence[str]) -> list[Task]:
        """The tasks of ``task_ids`` that exist, in one query."""
        async with self._reads() as s:
            return list((await s.execute(select(Task).where(Task.id.in_(task_ids)))).scalars())

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

    async def ping(self) -> None:
        async with self._reads() as s:
            await s.execute(select(1))
