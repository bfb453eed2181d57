"""``/api/tasks``: submit, list, read and cancel tasks."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query, Request, status
from fastapi.responses import JSONResponse

from tasklab_api import metrics
from tasklab_api.deps import State
from tasklab_api.limits import client_key, too_many
from tasklab_api.orm import Task
from tasklab_api.publisher import BrokerUnavailable
from tasklab_api.schemas import ErrorOut, TaskCreate, TaskOut, TaskPage
from tasklab_api.store import NotCancellable, TaskNotFound
from tasklab_common.messages import TASK_ID_PATTERN, TaskMessage, to_utc
from tasklab_common.models import Method, TaskKind, TaskStatus

router = APIRouter(prefix="/api", tags=["tasks"])

TaskId = Annotated[
    str,
    Path(min_length=1, max_length=64, pattern=TASK_ID_PATTERN, description="The task's id."),
]


@router.post(
    "/tasks",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=TaskOut,
    responses={
        200: {"model": TaskOut, "description": "sync: the finished task"},
        429: {"model": ErrorOut, "description": "Too many submissions"},
        503: {"model": ErrorOut, "description": "Broker down or queue full"},
        504: {"model": TaskOut, "description": "sync: still running when the wait ended"},
    },
)
async def submit_task(body: TaskCreate, request: Request, state: State) -> TaskOut | JSONResponse:
    """Submit a task. ``celery`` and ``rabbitmq`` answer 202 once the broker has the
    task; ``sync`` waits for the result and answers 200 with the finished task."""
    wait = body.wait or state.settings.sync_wait_seconds
    if body.method is Method.SYNC and wait > state.settings.sync_wait_max_seconds:
        raise HTTPException(
            422, f"`wait` may be at most {state.settings.sync_wait_max_seconds:g} seconds"
        )
    retry_after = state.limiter.allow(client_key(request))
    if retry_after:
        metrics.on_rejected(body.method, "rate_limited")
        raise too_many("too many submissions; slow down", retry_after)
    if not state.publisher.connected:
        metrics.on_rejected(body.method, "broker_unavailable")
        raise HTTPException(503, "broker unavailable", headers={"Retry-After": "5"})

    params = body.params()

    async def publish(task: Task) -> None:
        msg = TaskMessage(
            task_id=task.id, num=task.num, kind=body.kind, method=body.method, params=params
        )
        await state.publisher.publish_task(msg)

    try:
        task = await state.store.submit(body.method, body.kind, params, publish, label=body.label)
    except BrokerUnavailable as exc:
        metrics.on_rejected(body.method, "broker_unavailable")
        raise HTTPException(503, exc.reason, headers={"Retry-After": "5"}) from None
    metrics.on_submitted(task)
    out = TaskOut.model_validate(task)
    if body.method is not Method.SYNC:
        return out

    async def fetch() -> TaskOut | None:
        current = await state.store.get(task.id)
        return TaskOut.model_validate(current) if current else None

    final = await state.hub.wait_for(task.id, lambda t: t.status.is_final, fetch, wait)
    final = final or out
    code = 200 if final.status.is_final else 504
    return JSONResponse(final.model_dump(mode="json"), status_code=code)


@router.get("/tasks", response_model=TaskPage)
async def list_tasks(
    state: State,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    method: Annotated[list[Method] | None, Query()] = None,
    status_: Annotated[list[TaskStatus] | None, Query(alias="status")] = None,
    kind: Annotated[list[TaskKind] | None, Query()] = None,
    updated_since: Annotated[
        datetime | None, Query(description="Only tasks changed at or after this time.")
    ] = None,
) -> TaskPage:
    """Tasks, newest first."""
    if updated_since is not None:
        if updated_since.tzinfo is None:
            raise HTTPException(422, "updated_since needs a timezone (e.g. ...Z)")
        try:
            updated_since = to_utc(updated_since)
        except ValueError:
            raise HTTPException(422, "updated_since is out of range") from None
    rows, total = await state.store.list_tasks(
        limit=limit,
        offset=offset,
        method=method or (),
        status=status_ or (),
        kind=kind or (),
        updated_since=updated_since,
    )
    return TaskPage(
        items=[TaskOut.model_validate(r) for r in rows], total=total, limit=limit, offset=offset
    )


@router.get("/tasks/{task_id}", response_model=TaskOut, responses={404: {"model": ErrorOut}})
async def get_task(task_id: TaskId, state: State) -> TaskOut:
    task = await state.store.get(task_id)
    if task is None:
        raise HTTPException(404, "no such task")
    return TaskOut.model_validate(task)


@router.post(
    "/tasks/{task_id}/cancel",
    response_model=TaskOut,
    responses={404: {"model": ErrorOut}, 409: {"model": ErrorOut}},
)
async def cancel_task(task_id: TaskId, state: State) -> TaskOut:
    """Cancel a task that is not final yet. A pending task never runs; a running
    Celery task is revoked (terminated)."""
    try:
        cancelled = await state.store.cancel(task_id)
    except TaskNotFound:
        raise HTTPException(404, "no such task") from None
    except NotCancellable as exc:
        raise HTTPException(409, f"cannot cancel: {exc}") from None
    metrics.on_cancelled(cancelled.task)
    await state.canceller.stop(cancelled)
    return TaskOut.model_validate(cancelled.task)
