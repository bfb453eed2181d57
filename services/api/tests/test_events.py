"""The event hub never shows a subscriber a task moving backwards.

Found by the fault-injection suite: the submit handler announces a new task
(PENDING) after the broker's confirm, and a fast worker's IN_PROGRESS can be
announced before that, so the live stream showed IN_PROGRESS, then PENDING.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from tasklab_api.events import EventHub
from tasklab_api.schemas import TaskOut
from tasklab_common.models import Method, TaskKind, TaskStatus

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def snapshot(status: TaskStatus, attempts: int, second: int, task_id: str = "t1") -> TaskOut:
    return TaskOut(
        id=task_id,
        num=1,
        method=Method.CELERY,
        kind=TaskKind.PROCESS_TASK,
        status=status,
        params={},
        result=None,
        error=None,
        worker=None,
        attempts=attempts,
        created_at=T0,
        started_at=None,
        finished_at=None,
        updated_at=T0 + timedelta(seconds=second),
    )


def drain(q: asyncio.Queue[TaskOut | None]) -> list[tuple[str, str, int]]:
    out = []
    while not q.empty():
        item = q.get_nowait()
        assert item is not None
        out.append((item.id, item.status.value, item.attempts))
    return out


async def test_late_snapshots_are_not_published() -> None:
    hub = EventHub()
    async with hub.subscribe() as q:
        hub.publish(snapshot(TaskStatus.IN_PROGRESS, 1, 2))
        hub.publish(snapshot(TaskStatus.PENDING, 0, 0))  # the submit handler, late
        hub.publish(snapshot(TaskStatus.IN_PROGRESS, 1, 3))  # a redelivery: same progress
        hub.publish(snapshot(TaskStatus.DONE, 1, 4))
        hub.publish(snapshot(TaskStatus.IN_PROGRESS, 1, 5))  # a report after the end
        hub.publish(snapshot(TaskStatus.PENDING, 0, 0, task_id="t2"))
        assert drain(q) == [
            ("t1", "IN_PROGRESS", 1),
            ("t1", "IN_PROGRESS", 1),
            ("t1", "DONE", 1),
            ("t2", "PENDING", 0),
        ]


async def test_retries_move_forward() -> None:
    hub = EventHub()
    async with hub.subscribe() as q:
        for status, attempts, second in [
            (TaskStatus.PENDING, 0, 0),
            (TaskStatus.IN_PROGRESS, 1, 1),
            (TaskStatus.RETRYING, 1, 2),
            (TaskStatus.IN_PROGRESS, 2, 3),
            (TaskStatus.RETRYING, 1, 2),  # a late snapshot of the first failure
            (TaskStatus.DONE, 2, 4),
        ]:
            hub.publish(snapshot(status, attempts, second))
        assert [s for _, s, _ in drain(q)] == [
            "PENDING",
            "IN_PROGRESS",
            "RETRYING",
            "IN_PROGRESS",
            "DONE",
        ]
