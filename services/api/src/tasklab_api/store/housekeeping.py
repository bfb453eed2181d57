"""Housekeeping sweeps: tasks whose worker or message vanished, and old history.

The api's ``POST /internal/housekeeping`` (asked by the Celery beat) runs them; each
marks FAILED, with an error that says why (beginning with :data:`GAVE_UP`), the tasks
nothing will ever report on again, one writer transaction per task with its condition
checked again under the row's lock, or deletes what is past its retention.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, delete, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session

from tasklab_api.orm import CallbackNonce, Task, TaskEvent
from tasklab_api.store.notify import Announcer
from tasklab_api.store.transitions import GAVE_UP, locking
from tasklab_api.store.writer import StoreWriter
from tasklab_common.messages import utcnow
from tasklab_common.models import CELERY_METHODS, TaskStatus
from tasklab_common.queues import QUEUE_OF_METHOD

#: Most final tasks one housekeeping run deletes (the next run takes the rest).
PURGE_BATCH = 5000
#: Methods whose retry is a new message at the back of the queue (Celery's retry): a
#: RETRYING task of theirs waits like a PENDING one, for as long as the backlog lasts.
REQUEUED_RETRIES = tuple(sorted(m.value for m in CELERY_METHODS))
#: How the error of a PENDING task whose message is gone begins.
NEVER_DELIVERED = f"{GAVE_UP} never delivered"
#: How the error of a Celery task whose retry message is gone begins.
RETRY_GONE = f"{GAVE_UP} its retry was never delivered"


def stuck_error(silent: timedelta) -> str:
    return (
        f"{GAVE_UP} no report for {silent.total_seconds():.0f} s, past the task's duration "
        "and the grace period (its worker vanished?); marked FAILED by housekeeping"
    )


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


class Housekeeping:
    """The sweeps, on the store's writer, read sessions and announcer."""

    def __init__(
        self,
        writer: StoreWriter,
        reads: async_sessionmaker[AsyncSession],
        announcer: Announcer,
        *,
        postgres: bool,
    ) -> None:
        self._writer = writer
        self._reads = reads
        self._announcer = announcer
        self._locking = locking(postgres)

    async def fail_stuck(self, grace: timedelta) -> list[Task]:
        """Mark FAILED the running tasks with no report for their duration + ``grace``.

        A worker reports at the start of every attempt and at its end; silence past
        the work's own duration and the grace period means the worker is gone and its
        message with it (a live worker's message would have been redelivered).
        A Celery task's RETRYING is not such silence: its retry is a message waiting in
        the queue, behind any backlog, like a PENDING task's (:func:`_silent_running`).
        """
        now = utcnow()

        def error_of(task: Task) -> str | None:
            duration = float((task.params or {}).get("duration", 0.0))
            silent = now - task.updated_at
            return stuck_error(silent) if silent > grace + timedelta(seconds=duration) else None

        return await self._fail_where(_silent_running(now - grace), error_of, now)

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

            def error_of(task: Task, queue: str = queue) -> str:
                return orphan_error(queue, retrying=task.status == TaskStatus.RETRYING.value)

            condition = and_(
                Task.method.in_(methods), _waiting_for_message(min(since, now - grace))
            )
            failed += await self._fail_where(condition, error_of, now)
        return failed

    async def _fail_where(
        self,
        condition: ColumnElement[bool],
        error_of: Callable[[Task], str | None],
        now: datetime,
    ) -> list[Task]:
        """Mark FAILED, with the error ``error_of`` gives (None: leave it), each task
        that meets ``condition``, one writer transaction per task, the condition checked
        again under the row's lock; each is announced."""
        async with self._reads() as s:
            ids = list((await s.execute(select(Task.id).where(condition))).scalars())
        locked = self._locking.where(condition)

        def transaction(s: Session, task_id: str) -> Task | None:
            task = s.execute(locked, {"task_id": task_id}).scalar_one_or_none()
            error = error_of(task) if task is not None else None
            if task is None or error is None:
                return None
            task.status = TaskStatus.FAILED.value
            task.error = error
            task.finished_at = now
            task.updated_at = now
            self._announcer.in_transaction(s.connection(), [task.id])
            return task

        failed = []
        for task_id in ids:
            task = await self._writer.run(functools.partial(transaction, task_id=task_id))
            if task is not None:
                self._announcer.committed(task)
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
        """Forget the nonces of signed requests older than ``older_than``."""
        cutoff = utcnow() - older_than

        def purge(s: Session) -> int:
            res = s.execute(delete(CallbackNonce).where(CallbackNonce.seen_at < cutoff))
            return int(getattr(res, "rowcount", 0) or 0)

        return await self._writer.run(purge)
