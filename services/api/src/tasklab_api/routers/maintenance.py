"""``POST /internal/housekeeping``: periodic clean-up, requested by the Celery beat.

The api is the only writer of task state, so the beat's housekeeping task does not
touch the database: it asks the api, with a request signed like a status callback.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from fastapi import APIRouter, HTTPException

from tasklab_api import metrics
from tasklab_api.deps import State
from tasklab_api.orm import Task
from tasklab_api.schemas import ErrorOut
from tasklab_api.signing import SignedBody
from tasklab_api.state import AppState
from tasklab_api.store import ReplayError
from tasklab_common.messages import HousekeepingReport, HousekeepingRequest, utcnow
from tasklab_common.settings import HOUSEKEEPING_PATH

log = logging.getLogger("tasklab.api.housekeeping")

router = APIRouter(tags=["maintenance"])


@router.post(
    HOUSEKEEPING_PATH,
    response_model=HousekeepingReport,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": HousekeepingRequest.model_json_schema()}},
        }
    },
    responses={
        400: {"model": ErrorOut, "description": "Incomplete request (client disconnected)"},
        401: {"model": ErrorOut, "description": "Missing, bad or stale signature"},
        403: {"model": ErrorOut, "description": "Replayed request"},
    },
)
async def housekeeping(signed: SignedBody, state: State) -> HousekeepingReport:
    """Mark FAILED the tasks whose worker vanished (no report for their duration plus
    ``STUCK_GRACE_SECONDS``) and the tasks waiting longer than that for a message their
    queue, seen empty, no longer holds, and delete final tasks older than
    ``HISTORY_RETENTION_DAYS``. Signed with the callback secret; safe to repeat."""
    settings = state.settings
    asked = signed.parse(HousekeepingRequest)
    try:
        await state.store.use_nonce(signed.nonce)
    except ReplayError:
        raise HTTPException(403, "request rejected: replayed request") from None

    metrics.on_housekeeping_run()
    sweeps = state.store.housekeeping
    grace = timedelta(seconds=settings.stuck_grace_seconds)
    stuck = await sweeps.fail_stuck(grace)
    _log_failed(stuck)
    orphans = await _fail_orphaned(state, grace)
    _log_failed(orphans)
    purged: tuple[int, int] | None = None
    if settings.history_retention_days > 0:
        purged = await sweeps.purge_history(timedelta(days=settings.history_retention_days))
    metrics.on_housekeeping(stuck, orphans, purged[0] if purged else None)
    purged_tasks, purged_events = purged or (0, 0)
    report = HousekeepingReport(
        stuck_failed=len(stuck),
        orphans_failed=len(orphans),
        purged_tasks=purged_tasks,
        purged_events=purged_events,
    )
    log.info(
        "housekeeping (requested by %s): %s",
        asked.requested_by or "unknown",
        report.model_dump_json(),
    )
    return report


#: Longest span a queue must have been seen empty before its waiting tasks are taken for
#: orphans (shorter when STUCK_GRACE_SECONDS is): well above the broker's statistics
#: interval (5 s by default), so one stale or placeholder figure cannot fail a task.
EMPTY_SPAN = timedelta(seconds=60)


def _log_failed(tasks: list[Task]) -> None:
    for task in tasks:
        log.warning("task %s (%s): %s", task.num, task.id, task.error)


async def _fail_orphaned(state: AppState, grace: timedelta) -> list[Task]:
    """Fail the waiting tasks whose message is gone: a queue seen empty (no ready, no
    unacknowledged message, figures counted) by this api process in two housekeeping
    runs at least ``min(STUCK_GRACE_SECONDS, EMPTY_SPAN)`` apart, and by every run in
    between, cannot hold the message of a task that waited before the first of them.
    Needs the management API; without it, or when it does not answer, nothing is done."""
    snapshot = await state.broker_stats.snapshot(max_age=0)
    now = utcnow()
    state.empty_queues.observe(snapshot, now)
    empty = state.empty_queues.empty_since(min(grace, EMPTY_SPAN), now)
    return await state.store.housekeeping.fail_orphaned(empty, grace)
