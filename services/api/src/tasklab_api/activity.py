"""Recent activity from the task store: what the UI's timeline and throughput chart draw.

For a window of the last minutes, cut into equal buckets aligned to the clock (so that
successive reads agree on their boundaries):

* per bucket, the tasks submitted, finished and failed in it, and the tasks waiting
  (accepted, not started) and running at its end; exact, from each task's timestamps;
* the tasks to draw on the timeline: those the window shows (changed in it, or not
  final), newest first, at most ``limit``.

Only tasks changed in the window are read row by row (``updated_at`` is indexed and is
at least every other timestamp of a task); those changed before it and still not final
are counted by status, as they waited or ran through the whole window.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, or_, select

from tasklab_api.orm import Task
from tasklab_api.store import TaskStore
from tasklab_common.models import TaskStatus

__all__ = ["Activity", "read_activity"]

_NOT_FINAL = [s.value for s in TaskStatus if not s.is_final]
_RUNNING = [TaskStatus.IN_PROGRESS.value, TaskStatus.RETRYING.value]


@dataclass(frozen=True)
class Activity:
    now: datetime
    start: datetime
    bucket_seconds: float
    submitted: list[int]
    finished: list[int]
    failed: list[int]
    #: At each bucket's end.
    waiting: list[int]
    running: list[int]
    #: Newest first, at most the limit asked for; ``tasks_total`` counts them all.
    tasks: list[Task]
    tasks_total: int


def _bounds(now: datetime, window: timedelta, buckets: int) -> tuple[datetime, float]:
    """The window's start and the bucket length: the last bucket holds ``now``."""
    size = window.total_seconds() / buckets
    end = math.floor(now.timestamp() / size) * size + size
    return datetime.fromtimestamp(end - size * buckets, UTC), size


def _per_bucket(times: list[datetime], start: datetime, size: float, n: int) -> list[int]:
    counts = [0] * n
    for t in times:
        i = math.floor((t - start).total_seconds() / size)
        if 0 <= i < n:
            counts[i] += 1
    return counts


def _level(ups: list[float], downs: list[float], ends: list[float], base: int) -> list[int]:
    """How many are in a state at each end: entered at or before it, not yet left."""
    ups, downs = sorted(ups), sorted(downs)
    return [base + bisect_right(ups, e) - bisect_right(downs, e) for e in ends]


async def read_activity(
    store: TaskStore, *, now: datetime, window: timedelta, buckets: int, limit: int
) -> Activity:
    start, size = _bounds(now, window, buckets)
    shown = or_(Task.updated_at >= start, Task.status.in_(_NOT_FINAL))
    async with store.read_session() as s:
        rows = (
            await s.execute(
                select(Task.created_at, Task.started_at, Task.finished_at, Task.status).where(
                    Task.updated_at >= start
                )
            )
        ).all()
        before = dict(
            (
                await s.execute(
                    select(Task.status, func.count())
                    .where(Task.updated_at < start, Task.status.in_(_NOT_FINAL))
                    .group_by(Task.status)
                )
            ).all()
        )
        total = (await s.execute(select(func.count()).select_from(Task).where(shown))).scalar_one()
        tasks = list(
            (
                await s.execute(select(Task).where(shown).order_by(Task.num.desc()).limit(limit))
            ).scalars()
        )

    def ts(t: datetime) -> float:
        return t.timestamp()

    ends = [start.timestamp() + size * (i + 1) for i in range(buckets)]
    # Waiting: from creation until started (or finished unstarted: cancelled, failed).
    waiting = _level(
        [ts(c) for c, *_ in rows],
        [ts(left) for _, st, fin, _ in rows if (left := st or fin) is not None],
        ends,
        int(before.get(TaskStatus.PENDING.value, 0)),
    )
    running = _level(
        [ts(st) for _, st, _, _ in rows if st is not None],
        [ts(fin) for _, st, fin, _ in rows if st is not None and fin is not None],
        ends,
        sum(int(before.get(s, 0)) for s in _RUNNING),
    )
    return Activity(
        now=now,
        start=start,
        bucket_seconds=size,
        submitted=_per_bucket([c for c, *_ in rows], start, size, buckets),
        finished=_per_bucket([f for _, _, f, _ in rows if f is not None], start, size, buckets),
        failed=_per_bucket(
            [f for _, _, f, st in rows if f is not None and st == TaskStatus.FAILED.value],
            start,
            size,
            buckets,
        ),
        waiting=waiting,
        running=running,
        tasks=tasks,
        tasks_total=int(total),
    )
