"""``GET /api/events``: the live stream of task changes (server-sent events).

Written here on Starlette's ``StreamingResponse`` rather than with sse-starlette, on
purpose: the stream is three fixed kinds of lines (a ``hello`` with the reconnect
delay, a ``task`` event per change, a keep-alive comment), a client that goes away is
noticed by Starlette (the generator is cancelled) and one that cannot keep up is
dropped by the hub's bounded queue; and the streams end on the api's own shutdown path
(``EventHub.begin_shutdown``, from the server's ``shutdown``), the one that also ends
the sync waits. sse-starlette would add a second, process-wide shutdown mechanism (its
``AppStatus``, hooked into uvicorn's exit), whose behaviour with several servers in one
process has changed between its releases; ours has none of that to keep in step.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from tasklab_api.deps import State

router = APIRouter(prefix="/api", tags=["tasks"])

#: Seconds between keep-alive comments (proxies close silent connections).
KEEPALIVE_SECONDS = 15.0


@router.get(
    "/events",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def task_events(state: State) -> StreamingResponse:
    """Server-sent events: ``task`` events carry a changed task as JSON.

    After (re)connecting, a client reloads the list to catch up on what it missed.
    """

    async def stream() -> AsyncIterator[str]:
        async with state.hub.subscribe() as q:
            yield "retry: 1000\nevent: hello\ndata: {}\n\n"
            while True:
                try:
                    ev = await asyncio.wait_for(q.get(), KEEPALIVE_SECONDS)
                except TimeoutError:
                    yield ": keep-alive\n\n"
                    continue
                if ev is None:
                    return
                yield f"event: task\ndata: {ev.model_dump_json()}\n\n"

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
