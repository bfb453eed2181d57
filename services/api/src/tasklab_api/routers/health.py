"""Health, readiness and metrics endpoints (always open)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from tasklab_api import metrics
from tasklab_api.deps import State
from tasklab_api.routers.overview import RECENT
from tasklab_common.messages import utcnow

router = APIRouter(tags=["health"])

#: Seconds the readiness check waits for the database.
READY_DB_TIMEOUT = 3.0


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is alive (cheap; no dependency is checked)."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "Database or broker unreachable"}})
async def readyz(state: State) -> JSONResponse:
    """Ready when the database answers and the broker connection is up."""
    checks: dict[str, str] = {}
    try:
        # Bounded: a hung database server makes the api unready, not the probe hang.
        await asyncio.wait_for(state.store.ping(), READY_DB_TIMEOUT)
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"error: {type(exc).__name__}"
    checks["broker"] = "ok" if state.publisher.connected else "error: not connected"
    ok = all(v == "ok" for v in checks.values())
    return JSONResponse({"status": "ok" if ok else "unavailable", **checks}, 200 if ok else 503)


@router.get("/metrics", response_class=Response)
async def prometheus_metrics(state: State) -> Response:
    """Prometheus metrics; gauges are read from the store and the broker right now."""
    try:
        counts = await state.store.status_counts()
        running = {w.name: w.running for w in await state.store.worker_stats(utcnow() - RECENT)}
    except Exception:  # the database is down: serve the counters anyway
        counts, running = {}, {}
    metrics.set_gauges(counts, await state.broker_stats.snapshot(), running)
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
