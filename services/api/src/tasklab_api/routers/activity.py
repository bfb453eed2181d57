"""``GET /api/activity``: what the UI's timeline and throughput chart draw."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Query

from tasklab_api.activity import read_activity
from tasklab_api.deps import State
from tasklab_api.schemas import ActivityOut, ActivityTaskOut, SeriesOut
from tasklab_common.messages import utcnow

router = APIRouter(prefix="/api", tags=["overview"])

#: Buckets of the series (the window's length divided by this is the bucket's).
BUCKETS = 60
#: Tasks drawn on the timeline at most (the newest).
TASK_LIMIT = 500


@router.get("/activity", response_model=ActivityOut)
async def activity(
    state: State,
    window: Annotated[
        int, Query(ge=60, le=3600, description="Seconds back from now (60-3600).")
    ] = 300,
) -> ActivityOut:
    """The last ``window`` seconds from the task store: per bucket, the tasks submitted,
    finished and failed, and those waiting and running at its end; and the tasks to
    draw on a timeline (changed in the window or not final, newest first)."""
    got = await read_activity(
        state.store,
        now=utcnow(),
        window=timedelta(seconds=window),
        buckets=BUCKETS,
        limit=TASK_LIMIT,
    )
    return ActivityOut(
        now=got.now,
        start=got.start,
        bucket_seconds=got.bucket_seconds,
        series=SeriesOut(
            submitted=got.submitted,
            finished=got.finished,
            failed=got.failed,
            waiting=got.waiting,
            running=got.running,
        ),
        tasks=[ActivityTaskOut.model_validate(t) for t in got.tasks],
        tasks_total=got.tasks_total,
    )
