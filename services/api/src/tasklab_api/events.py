"""Task change notifications inside and across api processes.

Subscribers (the live stream, sync waiters) get every changed task. On PostgreSQL
each change is a ``NOTIFY`` sent in the changing transaction, and every api process
``LISTEN``s, so a change reaches the subscribers of every process; on SQLite (one
api process) changes are published in-process after commit.

Snapshots of one task can reach :meth:`EventHub.publish` out of order: the submit
handler announces the new task after the broker confirmed it, by which time a fast
worker's ``IN_PROGRESS`` may already have been announced; two callbacks of one task
can finish in either order. A snapshot older than the last one published for its
task is therefore dropped, so that no subscriber ever sees a task move backwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import datetime
from typing import ClassVar

import psycopg

from tasklab_api.orm import AnyTask
from tasklab_api.schemas import TaskOut
from tasklab_common.models import progress_key

log = logging.getLogger("tasklab.events")

#: The PostgreSQL channel of task changes (the store NOTIFYs, every api process LISTENs):
#: the payload is the ids of the tasks a transaction changed, separated by commas.
NOTIFY_CHANNEL = "tasklab_tasks"
NOTIFY_SEPARATOR = ","

SUBSCRIBER_QUEUE = 1000
#: Tasks whose last published progress is remembered (the most recently changed).
RECENT_TASKS = 10_000

_Progress = tuple[tuple[int, int], datetime]


class EventHub:
    """Fans task changes out to live streams and sync waiters of this process.

    :meth:`begin_shutdown` (the server is stopping) ends every live stream and wakes
    every waiter, so that a stopping api does not hold its connections open until
    the end of its grace period.
    """

    #: Every hub of this process (the server's shutdown reaches them through this).
    instances: ClassVar[weakref.WeakSet[EventHub]] = weakref.WeakSet()

    def __init__(self) -> None:
        self._subscribers: set[asyncio.Queue[TaskOut | None]] = set()
        self._listener: asyncio.Task[None] | None = None
        self.listening = asyncio.Event()
        self._published: OrderedDict[str, _Progress] = OrderedDict()
        self.closing = False
        EventHub.instances.add(self)

    def begin_shutdown(self) -> None:
        """End the live streams and wake the waiters: the process is stopping."""
        self.closing = True
        self._end_subscribers()

    def _end_subscribers(self) -> None:
        for q in list(self._subscribers):
            with contextlib.suppress(asyncio.QueueFull):
                while not q.empty():
                    q.get_nowait()
                q.put_nowait(None)

    def _is_stale(self, out: TaskOut) -> bool:
        """True for a snapshot older than the last one published for its task."""
        progress = (progress_key(out.status, out.attempts), out.updated_at)
        last = self._published.get(out.id)
        if last is not None and progress < last:
            return True
        self._published[out.id] = progress
        self._published.move_to_end(out.id)
        if len(self._published) > RECENT_TASKS:
            self._published.popitem(last=False)
        return False

    def publish(self, task: AnyTask | TaskOut) -> None:
        out = task if isinstance(task, TaskOut) else TaskOut.model_validate(task)
        if self._is_stale(out):
            return
        for q in list(self._subscribers):
            try:
                q.put_nowait(out)
            except asyncio.QueueFull:
                # A subscriber that cannot keep up is dropped; it reconnects and
                # catches up from the task list.
                self._subscribers.discard(q)
                with contextlib.suppress(asyncio.QueueFull):
                    q.get_nowait()
                    q.put_nowait(None)

    @contextlib.asynccontextmanager
    async def subscribe(self) -> AsyncIterator[asyncio.Queue[TaskOut | None]]:
        q: asyncio.Queue[TaskOut | None] = asyncio.Queue(SUBSCRIBER_QUEUE)
        if self.closing:
            q.put_nowait(None)
        self._subscribers.add(q)
        try:
            yield q
        finally:
            self._subscribers.discard(q)

    async def wait_for(
        self,
        task_id: str,
        done: Callable[[TaskOut], bool],
        fetch: Callable[[], Awaitable[TaskOut | None]],
        timeout: float,
        poll: float = 1.0,
    ) -> TaskOut | None:
        """Wait until ``done(task)``; returns the last known task (None if unknown).

        Notifications wake the waiter at once; a slow poll covers a notification
        lost while a listener reconnects. When the process begins to stop, it returns
        at once with what it knows.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        async with self.subscribe() as q:
            last = await fetch()
            while last is not None and not done(last) and not self.closing:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    ev = await asyncio.wait_for(q.get(), min(poll, remaining))
                except TimeoutError:
                    last = await fetch() or last
                    continue
                if ev is None:  # dropped as too slow, or stopping: fall back to polling
                    last = await fetch() or last
                    continue
                if ev.id == task_id:
                    last = ev
            return last

    def start_listener(
        self, conninfo: str, fetch: Callable[[list[str]], Awaitable[Sequence[AnyTask]]]
    ) -> None:
        """LISTEN for the store's changes; ``fetch(ids)`` reads the tasks a notification
        names (in one query), each then published."""
        self._listener = asyncio.create_task(self._listen(conninfo, fetch), name="pg-listen")

    async def _listen(
        self, conninfo: str, fetch: Callable[[list[str]], Awaitable[Sequence[AnyTask]]]
    ) -> None:
        delay = 0.5
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
                    await conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                    self.listening.set()
                    delay = 0.5
                    async for note in conn.notifies():
                        for task in await fetch(note.payload.split(NOTIFY_SEPARATOR)):
                            self.publish(task)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # keep listening whatever happens
                self.listening.clear()
                log.warning("LISTEN connection lost (%s); reconnecting in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
        self.closing = True
        self._end_subscribers()
