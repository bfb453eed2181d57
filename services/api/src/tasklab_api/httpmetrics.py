"""HTTP request metrics by route template (pure ASGI, so streaming responses count too)."""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tasklab_api import metrics

#: Long-lived responses whose duration says nothing about latency.
STREAMING_ROUTES = frozenset({"/api/events"})


class HttpMetricsMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        code = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal code
            if message["type"] == "http.response.start":
                code = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            streaming = template in STREAMING_ROUTES
            seconds = None if streaming else time.perf_counter() - started
            metrics.on_http_request(scope["method"], template, code, seconds)
