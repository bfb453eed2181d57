"""``POST /update_task_status_api/``: the workers' authenticated status callback."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException

from tasklab_api import metrics
from tasklab_api.deps import State
from tasklab_api.schemas import ErrorOut
from tasklab_api.signing import SignedBody
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
async def update_task_status(signed: SignedBody, state: State) -> CallbackReply:
    """A worker reports a status change. Requests are signed (HMAC-SHA256 with the
    shared secret over timestamp, nonce and body). An update that does not move the
    task forward is accepted and changes nothing; ``verdict`` says what was made of it."""
    update = signed.parse(StatusUpdate, metrics.Refusal.INVALID)
    try:
        result = await state.store.apply_update(update, signed.nonce)
    except ReplayError:
        metrics.on_callback_refused(metrics.Refusal.REPLAYED)
        raise HTTPException(403, "callback rejected: replayed request") from None
    except TaskNotFound:
        metrics.on_callback_refused(metrics.Refusal.UNKNOWN_TASK)
        raise HTTPException(404, "no such task", headers={UNKNOWN_TASK_HEADER: "1"}) from None
    metrics.on_report(result.verdict, result.task, update)
    return CallbackReply(
        applied=result.applied,
        status=TaskStatus(result.task.status),
        proceed=result.proceed,
        attempts=result.task.attempts,
        duplicate=result.duplicate,
        dead_letter=result.gave_up,
        verdict=result.verdict,
    )
