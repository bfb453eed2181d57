"""``POST /update_task_status_api/``: the workers' authenticated status callback."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from starlette.requests import ClientDisconnect

from tasklab_api.callback import DISCONNECTED, answer_report
from tasklab_api.deps import State
from tasklab_api.schemas import ErrorOut
from tasklab_common.messages import MAX_REPORTS_PER_REQUEST, CallbackReply, StatusUpdate
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


_REPORT = inline_schema(StatusUpdate)


@router.post(
    CALLBACK_PATH,
    response_model=CallbackReply,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "oneOf": [
                            _REPORT,
                            {
                                "type": "array",
                                "items": _REPORT,
                                "minItems": 1,
                                "maxItems": MAX_REPORTS_PER_REQUEST,
                                "description": "A batch: a reply per report, in order.",
                            },
                        ]
                    }
                }
            },
        }
    },
    responses={
        400: {"model": ErrorOut, "description": "Incomplete request (client disconnected)"},
        401: {"model": ErrorOut, "description": "Missing, bad or stale signature"},
        403: {"model": ErrorOut, "description": "Replayed request"},
        404: {"model": ErrorOut, "description": "Unknown task"},
    },
)
async def update_task_status(request: Request, state: State) -> Response:
    """A worker reports a status change, or several (a JSON array: one transaction,
    answered with a JSON array of replies, in order; an unknown task's reply has
    ``unknown`` set instead of a 404). Requests are signed (HMAC-SHA256 with the
    shared secret over timestamp, nonce and body). An update that does not move the
    task forward is accepted and changes nothing; ``verdict`` says what was made of it.

    (The api serves this path with :class:`tasklab_api.callback.CallbackEndpoint`; the
    route documents it, with the same answers.)"""
    try:
        body = await request.body()
    except ClientDisconnect:
        answer = DISCONNECTED
    else:
        answer = await answer_report(state, body, request.headers)
    return Response(answer.body, answer.status, answer.headers, media_type="application/json")
