"""Telling the live streams that a task changed: the store does it, nobody else.

On PostgreSQL a change's own transaction sends a ``NOTIFY`` (delivered at commit to
every api process, which ``LISTEN``s: see :mod:`tasklab_api.events`); on SQLite there
is one api process, and the change is published to its hub after the commit. A task
that no transaction of the store announced (a new task, once the broker has it) is
announced on its own.

Best effort: the change itself is committed, and a caller must not be answered 5xx
because the announcement failed (a client would resubmit a task that runs); a page
that missed an event catches up on its next reload.
"""

from __future__ import annotations

import functools
import logging

from sqlalchemy import bindparam, func, select
from sqlalchemy.orm import Session

from tasklab_api.events import NOTIFY_CHANNEL, EventHub
from tasklab_api.orm import Task
from tasklab_api.store.writer import StoreWriter

log = logging.getLogger("tasklab.api")

_NOTIFY = select(func.pg_notify(NOTIFY_CHANNEL, bindparam("task_id")))


def notify_sync(s: Session, task_id: str) -> None:
    """PostgreSQL: tell every api process that the task changed (delivered at commit)."""
    s.execute(_NOTIFY, {"task_id": task_id})


class Announcer:
    """Announces the store's changes to the live streams (``hub``: this process's; None
    when nothing in this process listens, e.g. a store of its own in a test)."""

    def __init__(self, writer: StoreWriter, *, postgres: bool, hub: EventHub | None) -> None:
        self._writer = writer
        self._postgres = postgres
        self._hub = hub

    def in_transaction(self, s: Session, task_id: str) -> None:
        """Inside the transaction that changes the task (PostgreSQL's NOTIFY)."""
        if self._postgres:
            notify_sync(s, task_id)

    def committed(self, task: Task) -> None:
        """After the commit of a transaction that called :meth:`in_transaction`."""
        if not self._postgres and self._hub is not None:
            self._hub.publish(task)

    async def announce(self, task: Task) -> None:
        """A change that no transaction announced (committed already)."""
        if not self._postgres:
            self.committed(task)
            return
        try:
            await self._writer.run(functools.partial(notify_sync, task_id=task.id))
        except Exception as exc:
            log.warning("could not announce task %s: %s: %s", task.id, type(exc).__name__, exc)
