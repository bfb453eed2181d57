"""Answers sent by the raw ASGI middlewares themselves (origin, host, limits, the
internal port), before the app sees a request."""

from __future__ import annotations

import json

from starlette.types import Send


async def send_error(send: Send, status: int, detail: str, *headers: tuple[bytes, bytes]) -> None:
    """Answer ``status`` with ``{"detail": ...}`` from a middleware, before the app."""
    body = json.dumps({"detail": detail}).encode()
    start = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": [*start, *headers]})
    await send({"type": "http.response.body", "body": body})
