"""The workers' status callback: what a signed report (or batch) is answered, served
as pure ASGI.

Every task brings two or more reports, so this is the api's busiest path. Served by
FastAPI, a report went through the exception and exit-stack layers, dependency
solving and response-model validation of a route; :class:`CallbackEndpoint` reads the
body, checks the signature, applies the report and sends its answer directly (the
public app hands it the callback's path as its innermost layer, after every check:
host, internal port, origin, body limit, security headers, HTTP metrics).
:func:`answer_report` is the whole answer, also behind the documented FastAPI route.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, cast

from pydantic import ValidationError
from starlette.types import Receive, Scope, Send

from tasklab_api import errorhandlers, metrics
from tasklab_api.signing import verified_nonce
from tasklab_api.state import AppState
from tasklab_api.store import ReplayError
from tasklab_common.messages import (
    UNKNOWN_TASK_HEADER,
    CallbackReplies,
    CallbackReply,
    is_batch,
    parse_reports,
)
from tasklab_common.models import TaskStatus
from tasklab_common.signing import (
    NONCE_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    CallbackAuthError,
)

#: The signature's headers, as ASGI names them (lower case, bytes).
_SIGNED_HEADERS = {
    name.lower().encode("latin-1"): name
    for name in (TIMESTAMP_HEADER, NONCE_HEADER, SIGNATURE_HEADER)
}
_JSON = (b"content-type", b"application/json")


@dataclass(frozen=True)
class Answer:
    """An HTTP answer: status, JSON body, extra headers."""

    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def error(cls, status: int, detail: Any, **headers: str) -> Answer:
        return cls(status, errorhandlers.detail_body(detail), headers)


DISCONNECTED = Answer.error(400, "incomplete request: the client disconnected")


async def answer_report(state: AppState, body: bytes, headers: Mapping[str, str]) -> Answer:
    """A worker's signed report, or batch of reports, applied where it moves its task
    forward, and the answer.

    The body is one :class:`~tasklab_common.messages.StatusUpdate`, or a JSON array of
    1 to ``MAX_REPORTS_PER_REQUEST`` of them (a batch: one signature, one transaction,
    applied in order). 401 for a missing, bad or stale signature, 422 with a reason per
    problem for a body that is neither, 403 for a replayed request (nothing applied).
    One report: 404 (marked with ``UNKNOWN_TASK_HEADER``) for a task the store does not
    know, else 200 with its :class:`~tasklab_common.messages.CallbackReply`. A batch:
    200 with a reply per report, in order (``unknown`` set for a task the store does
    not know). ``verdict`` says what was made of each report: an update that does not
    move the task forward changes nothing.
    """
    try:
        nonce = verified_nonce(state.settings, body, headers)
    except CallbackAuthError as exc:
        return Answer.error(401, f"callback rejected: {exc.reason}")
    batch = is_batch(body)
    try:
        updates = parse_reports(body)
    except ValidationError as exc:
        metrics.on_callback_refused(metrics.Refusal.INVALID)
        errors = exc.errors(include_url=False, include_context=False)
        return Answer.error(422, errorhandlers.problems(errors))
    try:
        results = await state.store.apply_updates(updates, nonce)
    except ReplayError:
        metrics.on_callback_refused(metrics.Refusal.REPLAYED)
        return Answer.error(403, "callback rejected: replayed request")
    replies: list[CallbackReply] = []
    for update, result in zip(updates, results, strict=True):
        if result is None:
            metrics.on_callback_refused(metrics.Refusal.UNKNOWN_TASK)
            replies.append(CallbackReply.unknown_task())
            continue
        metrics.on_report(result.verdict, result.task, update)
        replies.append(
            CallbackReply(
                applied=result.applied,
                status=TaskStatus(result.task.status),
                proceed=result.proceed,
                attempts=result.task.attempts,
                duplicate=result.duplicate,
                dead_letter=result.gave_up,
                verdict=result.verdict,
            )
        )
    if batch:
        return Answer(200, CallbackReplies.dump_json(replies))
    (reply,) = replies
    if reply.unknown:
        return Answer.error(404, "no such task", **{UNKNOWN_TASK_HEADER: "1"})
    return Answer(200, reply.model_dump_json().encode())


class CallbackEndpoint:
    """Pure ASGI: ``POST`` a signed report, answered by :func:`answer_report`.

    ``route`` is set as the request's ``scope["route"]`` (the HTTP metrics label the
    request with its path, as for any route). The api's state is the public app's
    (``scope["app"].state.tasklab``).
    """

    def __init__(self, route: Any) -> None:
        self.route = route

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["route"] = self.route
        if scope["method"] != "POST":
            answer = Answer.error(405, "Method Not Allowed", allow="POST")
        else:
            body = await _body(receive)
            if body is None:
                answer = DISCONNECTED
            else:
                state = cast(AppState, scope["app"].state.tasklab)
                answer = await answer_report(state, body, _signature_headers(scope))
        await _send(send, answer)


def _signature_headers(scope: Scope) -> dict[str, str]:
    found: dict[str, str] = {}
    for name, value in scope["headers"]:
        header = _SIGNED_HEADERS.get(name)
        if header is not None and header not in found:
            found[header] = value.decode("latin-1")
    return found


async def _body(receive: Receive) -> bytes | None:
    """The request's body; None if the client went away before it was complete."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _send(send: Send, answer: Answer) -> None:
    headers = [_JSON, (b"content-length", str(len(answer.body)).encode())]
    for name, value in answer.headers.items():
        headers.append((name.lower().encode("latin-1"), value.encode("latin-1")))
    await send({"type": "http.response.start", "status": answer.status, "headers": headers})
    await send({"type": "http.response.body", "body": answer.body})
