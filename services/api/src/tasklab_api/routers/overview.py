"""``GET /api/overview``: what the UI's header strip shows."""

from __future__ import annotations

import time
from datetime import timedelta

from fastapi import APIRouter

from tasklab_api.deps import State
from tasklab_api.schemas import OverviewOut, QueueOut, WorkerOut
from tasklab_common.messages import utcnow
from tasklab_common.models import TaskStatus

router = APIRouter(prefix="/api", tags=["overview"])

#: Workers that are not consuming now stay listed (offline) this long after their
#: last task.
RECENT = timedelta(hours=1)


@router.get("/overview", response_model=OverviewOut)
async def overview(state: State) -> OverviewOut:
    """Tasks by status (waiting and running: the task store's, so they agree with the
    task list), the broker's queue depth (ready / unacked, with the figures' age: the
    broker's statistics lag a few seconds) and consumers per queue, and workers with the
    tasks each has run. A worker is online while it consumes."""
    counts = await state.store.status_counts()
    snap = await state.broker_stats.snapshot()
    online: dict[str, str] = {}
    for q in snap.queues:
        for name in q.consumer_names:
            online.setdefault(name, q.name)
    rows = {r.name: r for r in await state.store.worker_stats(utcnow() - RECENT)}
    workers = [
        WorkerOut(
            name=name,
            queue=online.get(name),
            online=name in online,
            running=rows[name].running if name in rows else 0,
            done=rows[name].done if name in rows else 0,
            failed=rows[name].failed if name in rows else 0,
            last_seen=rows[name].last_seen if name in rows else None,
        )
        for name in sorted(set(online) | set(rows))
    ]
    return OverviewOut(
        counts={s: counts.get(s, 0) for s in TaskStatus},
        in_progress=counts.get(TaskStatus.IN_PROGRESS, 0) + counts.get(TaskStatus.RETRYING, 0),
        waiting=counts.get(TaskStatus.PENDING, 0),
        broker_stats_age=round(time.monotonic() - snap.taken_at, 1) if snap.ok else None,
        queues=[
            QueueOut(name=q.name, ready=q.ready, unacked=q.unacked, consumers=q.consumers)
            for q in snap.queues
        ]
        if snap.ok
        else None,
        broker_stats_error=snap.error,
        workers=workers,
    )
