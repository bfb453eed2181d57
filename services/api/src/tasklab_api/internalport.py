"""The workers' signed routes on a port of their own (``API_INTERNAL_PORT``).

The status callback and housekeeping routes are meant for the workers alone. With an
internal port, a network policy can let only the worker pods reach them (the chart
does), and the api enforces the split itself: the internal port answers those routes
and nothing else (404), the public port answers everything else and refuses those
routes (404), whoever asks. The port a request came in on is the local port of its
connection (the ASGI ``server`` address), which a client cannot choose by a header.
Without an internal port every route is served on the one port.
"""

from __future__ import annotations

from collections.abc import Iterable

from starlette.types import ASGIApp, Receive, Scope, Send

from tasklab_api.asgi import send_error


class InternalPortMiddleware:
    """Serves ``signed_paths`` only on ``internal_port``, and only them there. Pure ASGI."""

    def __init__(
        self, app: ASGIApp, internal_port: int | None, signed_paths: Iterable[str]
    ) -> None:
        self.app = app
        self.internal_port = internal_port
        self.signed_paths = frozenset(signed_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.internal_port is None or scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        server = scope.get("server")
        internal = server is not None and server[1] == self.internal_port
        signed = scope["path"] in self.signed_paths
        if internal == signed:
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        reason = (
            "only the workers' signed routes are served on this port"
            if internal
            else "served on the api's internal port only"
        )
        await send_error(send, 404, reason)
