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

import logging
from collections.abc import Sequence

from sqlalchemy import Connection, bindparam, func, select
from sqlalchemy.orm import Session

from tasklab_api.events import NOTIFY_CHANNEL, NOTIFY_SEPARATOR, EventHub
from tasklab_api.orm import AnyTask
from tasklab_api.store.writer import StoreWriter

log = logging.getLogger("tasklab.api")

_NOTIFY = select(func.pg_notify(NOTIFY_CHANNEL, bindparam("task_ids")))
#: Task ids per NOTIFY: a payload must stay under PostgreSQL's 8,000 bytes (an id is
#: the api's uuid4, 36 characters; at most 64).
IDS_PER_NOTIFY = 100


def notify_sync(conn: Connection, task_ids: Sequence[str]) -> None:
    """PostgreSQL: tell every api process that the tasks changed (delivered at commit),
    in as few notifications as the payload limit allows."""
    for start in range(0, len(task_ids), IDS_PER_NOTIFY):
        chunk = NOTIFY_SEPARATOR.join(task_ids[start : start + IDS_PER_NOTIFY])
        conn.execute(_NOTIFY, {"task_ids": chunk})


class Announcer:
    """Announces the store's changes to the live streams (``hub``: this process's; None
    when nothing in this process listens, e.g. a store of its own in a test)."""

    def __init__(self, writer: StoreWriter, *, postgres: bool, hub: EventHub | None) -> None:
        self._writer = writer
        self._postgres = postgres
        self._hub = hub

    def in_transaction(self, conn: Connection, task_ids: Sequence[str]) -> None:
        """Inside the transaction that changes the tasks (PostgreSQL's NOTIFY), once."""
        if self._postgres:
            notify_sync(conn, task_ids)

    def committed(self, *tasks: AnyTask) -> None:
        """After the commit of a transaction that called :meth:`in_transaction`."""
        if not self._postgres and self._hub is not None:
            for task in tasks:
                self._hub.publish(task)

    async def announce(self, task: AnyTask) -> None:
        """A change that no transaction announced (committed already)."""
        if not self._postgres:
            self.committed(task)
            return

        def notify(s: Session) -> None:
            notify_sync(s.connection(), [task.id])

        try:
            await self._writer.run(notify)
        except Exception as exc:
            log.warning("could not announce task %s: %s: %s", task.id, type(exc).__name__, exc)
