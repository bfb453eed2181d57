"""``POST /update_task_status_api/``: the workers' authenticated status callback."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from tasklab_api import metrics
from tasklab_api.deps import State
from tasklab_api.schemas import ErrorOut
from tasklab_api.signing import CallbackAuthError, read_signed
from tasklab_api.store import ReplayError, TaskNotFound
from tasklab_common.messages import UNKNOWN_TASK_HEADER, CallbackReply, StatusUpdate
from tasklab_common.models import TaskStatus
from tasklab_common.settings import CALLBACK_PATH

router = APIRouter(tags=["callbacks"])


def inline_schema(model: type[StatusUpdate]) -> dict[str, Any]:
    """A model's JSON schema with its ``$defs`` inlined.

    Pydantic's schema refers to ``#/$defs/...``; placed inside the OpenAPI document,
    such a reference would point at the document's root, where nothing is.
    """
    schema = model.model_json_schema()
    defs: dict[str, Any] = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                rest = {k: v for k, v in node.items() if k != "$ref"}
                return {**resolve(defs[ref.removeprefix("#/$defs/")]), **resolve(rest)}
            return {key: resolve(value) for key, value in node.items()}
        if isinstance(node, list):
            return [resolve(item) for item in node]
        return node

    resolved: dict[str, Any] = resolve(schema)
    return resolved


@router.post(
    CALLBACK_PATH,
    response_model=CallbackReply,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": inline_schema(StatusUpdate)}},
        }
    },
    responses={
        400: {"model": ErrorOut, "description": "Incomplete request (client disconnected)"},
        401: {"model": ErrorOut, "description": "Missing, bad or stale signature"},
        403: {"model": ErrorOut, "description": "Replayed request"},
        404: {"model": ErrorOut, "description": "Unknown task"},
    },
)
async def update_task_status(request: Request, state: State) -> CallbackReply:
    """A worker reports a status change. Requests are signed (HMAC-SHA256 with the
    shared secret over timestamp, nonce and body). An update that does not move the
    task forward is accepted and changes nothing."""
    try:
        raw, call = await read_signed(request, state.settings)
    except CallbackAuthError as exc:
        metrics.CALLBACKS.labels("unauthenticated").inc()
        raise HTTPException(401, f"callback rejected: {exc.reason}") from None
    try:
        update = StatusUpdate.model_validate_json(raw)
    except ValidationError as exc:
        metrics.CALLBACKS.labels("invalid").inc()
        raise RequestValidationError(exc.errors(include_url=False, include_context=False)) from None
    try:
        outcome = await state.store.apply_update(update, call.nonce)
    except ReplayError:
        metrics.CALLBACKS.labels("replayed").inc()
        raise HTTPException(403, "callback rejected: replayed request") from None
    except TaskNotFound:
        metrics.CALLBACKS.labels("unknown_task").inc()
        raise HTTPException(404, "no such task", headers={UNKNOWN_TASK_HEADER: "1"}) from None

    task = outcome.task
    if outcome.duplicate:
        metrics.CALLBACKS.labels("duplicate").inc()
    elif outcome.gave_up:
        metrics.CALLBACKS.labels("gave_up").inc()
        metrics.on_finished(task)
    elif outcome.applied:
        metrics.CALLBACKS.labels("applied").inc()
        metrics.on_update(task, update)
    else:
        metrics.CALLBACKS.labels("stale").inc()
    if outcome.changed:
        await state.announce(task, notified=True)
    return CallbackReply(
        applied=outcome.applied,
        status=TaskStatus(task.status),
        proceed=outcome.proceed,
        attempts=task.attempts,
        duplicate=outcome.duplicate,
        dead_letter=outcome.gave_up,
    )
