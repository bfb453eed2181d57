"""The store's write machinery: every write transaction runs on a writer thread.

:class:`StoreWriter` runs whole transactions as synchronous sessions on threads of
its own (grouped into one commit on SQLite); :class:`GroupInsert` inserts new tasks
in batches; :class:`Batches` is the queue both group their callers' work with.
Nothing here knows what a task's status means.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Generic, TypeVar, cast

from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session, sessionmaker

from tasklab_api.db import create_sync_engine, engine_of
from tasklab_api.orm import Task
from tasklab_api.store.transitions import Refused

T = TypeVar("T")
Item = TypeVar("Item")
#: What one caller of a batch gets back: its result, or the exception it gets.
Settled = tuple[Any, Exception | None]


def _in_transaction(s: Session) -> bool:
    """Whether the database connection of ``s`` is still inside its transaction."""
    try:
        dbapi = s.connection().connection.dbapi_connection
    except Exception:
        return False
    return bool(getattr(dbapi, "in_transaction", True))


class _RollBack(Exception):
    """A work of a group failed: roll the group's transaction back."""


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
    together in one (group commit), and every caller gets its own result or exception,
    after the commit. Under load (many workers reporting at once) this saves a BEGIN, a
    COMMIT and a hop to the thread per transaction. A work that raises
    :class:`~tasklab_api.store.transitions.Refused` wrote nothing, and the group goes
    on; any other exception rolls the group back, and its works run again one
    transaction each, so that only the failing one fails (no savepoint per work: they
    cost as much as the work). PostgreSQL's writers do not group: their transactions
    lock rows, and a group would hold its locks longer.
    """

    POSTGRES_THREADS = 4
    #: Most transactions run together in one group.
    MAX_GROUP = 64

    def __init__(self, engine: Engine, threads: int, *, group: bool = False) -> None:
        self._engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="store-writer")
        self._groups = Batches(self._run_group, self.MAX_GROUP, "store-writes") if group else None

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

    def _grouped(self, works: list[Callable[[Session], Any]]) -> list[Settled] | None:
        """One transaction for all; each work's (result, exception). None when a work
        failed otherwise than :class:`Refused`: the transaction was rolled back."""
        outcomes: list[Settled] = []
        try:
            with self._sessions() as s, s.begin():
                for work in works:
                    try:
                        value = work(s)
                    except Refused as refusal:
                        outcomes.append((None, refusal))
                    except Exception as exc:
                        if not _in_transaction(s):
                            # SQLite ended the whole transaction (disk full, I/O error...):
                            # the group's earlier writes are gone too. Every caller gets
                            # the error; nothing more runs outside the transaction.
                            raise
                        raise _RollBack from exc
                    else:
                        outcomes.append((value, None))
                    if s.new or s.dirty or s.deleted:
                        s.flush()  # (an ORM work's changes, before the next work reads)
                    # Each result keeps its own copy of the ORM rows it returns: a later
                    # work of the group changing the same task must not change it.
                    s.expunge_all()
        except _RollBack:
            return None
        return outcomes

    async def _run_group(self, works: list[Callable[[Session], Any]]) -> list[Settled]:
        if len(works) == 1:
            return [await self._alone(works[0])]
        loop = asyncio.get_running_loop()
        try:
            outcomes = await loop.run_in_executor(self._pool, self._grouped, works)
        except Exception as exc:
            # The group's own BEGIN or COMMIT failed, or SQLite ended its transaction:
            # nothing of it was written, and every caller gets the error (as each would
            # have alone).
            return [(None, exc)] * len(works)
        if outcomes is None:
            return [await self._alone(work) for work in works]
        return outcomes

    async def _alone(self, work: Callable[[Session], Any]) -> Settled:
        loop = asyncio.get_running_loop()
        return await _settled(loop.run_in_executor(self._pool, self._transaction, work))

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self._engine.dispose()


class GroupInsert:
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
        self._batches = Batches(self._insert, self.MAX_BATCH, "task-inserts")

    async def insert(self, task: Task) -> None:
        await self._batches.put(task)

    async def _insert(self, tasks: list[Task]) -> list[Settled]:
        try:
            await self._write(tasks)
        except Exception as exc:
            if len(tasks) == 1:
                return [(None, exc)]
            return [await _settled(self._write([task])) for task in tasks]
        return [(None, None)] * len(tasks)

    async def _write(self, tasks: list[Task]) -> None:
        await self._writer.run(lambda s: s.add_all(tasks))


class Batches(Generic[Item]):
    """Callers each put an item and wait; the items waiting are handed to ``handle``
    in batches of at most ``limit``, one batch at a time, and each caller gets its own
    outcome. A caller cancelled meanwhile does not take its item back."""

    def __init__(
        self, handle: Callable[[list[Item]], Awaitable[list[Settled]]], limit: int, name: str
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


async def _settled(call: Awaitable[Any]) -> Settled:
    """What ``call`` returns, or the exception it raises, as :data:`Settled`."""
    try:
        return await call, None
    except Exception as exc:
        return None, exc
