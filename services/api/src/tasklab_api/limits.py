"""Request limits: body size and type; per-client rates (submissions, wrong credentials)."""

from __future__ import annotations

import ipaddress
import math
import time
from collections import OrderedDict
from dataclasses import dataclass

import fastapi
from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tasklab_api.asgi import send_error


class BodyLimitMiddleware:
    """413 for bodies over ``max_bytes``; 415 for non-JSON bodies sent to the JSON API.

    Pure ASGI, so the limit holds for chunked bodies too.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        length = headers.get(b"content-length")
        if length is not None:
            try:
                too_big = int(length) > self.max_bytes
            except ValueError:
                await send_error(send, 400, "invalid Content-Length")
                return
            if too_big:
                await send_error(send, 413, f"request body larger than {self.max_bytes} bytes")
                return
        ctype = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        has_body = length not in (None, b"0") or b"transfer-encoding" in headers
        if has_body and ctype != b"application/json":
            await send_error(send, 415, "send the body as application/json")
            return

        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # An HTTPException, so that FastAPI's body parsing passes it on.
                    raise HTTPException(413, f"request body larger than {self.max_bytes} bytes")
            return message

        await self.app(scope, limited_receive, send)


@dataclass
class _Bucket:
    tokens: float
    stamp: float


class RateLimiter:
    """Token bucket per key (client address); ``rate`` 0 disables it.

    At most ``max_keys`` buckets are kept, least recently used first out. A bucket that
    has refilled is the same as no bucket, so those go first; one that is not full (a
    client that used its tokens, or is locked out) is never dropped to make room: once
    every kept bucket is such, new keys share one overflow bucket. So a flood of new
    addresses can neither lift a lockout nor grow the memory without bound.
    """

    MAX_KEYS = 10_000
    OVERFLOW = "(overflow)"

    def __init__(self, rate: float, burst: int, max_keys: int = MAX_KEYS) -> None:
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def allow(self, key: str) -> float:
        """0 when allowed (a token is used), else the seconds to wait before retrying."""
        return self._take(key, use=True)

    def wait(self, key: str) -> float:
        """0 when a token is there (none is used), else the seconds until there is one."""
        return self._take(key, use=False)

    def __len__(self) -> int:
        return len(self._buckets)

    def _take(self, key: str, *, use: bool) -> float:
        if self.rate <= 0:
            return 0.0
        now = time.monotonic()
        b = self._bucket(key, now)
        b.tokens = min(float(self.burst), b.tokens + (now - b.stamp) * self.rate)
        b.stamp = now
        if b.tokens >= 1:
            if use:
                b.tokens -= 1
            return 0.0
        return (1 - b.tokens) / self.rate

    def _bucket(self, key: str, now: float) -> _Bucket:
        b = self._buckets.get(key)
        if b is not None:
            self._buckets.move_to_end(key)
            return b
        if len(self._buckets) >= self.max_keys and not self._make_room(now):
            key = self.OVERFLOW
            b = self._buckets.get(key)
            if b is not None:
                return b
        b = self._buckets[key] = _Bucket(float(self.burst), now)
        return b

    def _make_room(self, now: float) -> bool:
        """Drop the least recently used bucket that has refilled; False if none has."""
        for key, b in self._buckets.items():
            if key != self.OVERFLOW and b.tokens + (now - b.stamp) * self.rate >= self.burst:
                del self._buckets[key]
                return True
        return False


def client_key(conn: HTTPConnection) -> str:
    """The client a request came from, the per-client limits' key: its IPv4 address, or
    the /64 network of an IPv6 one (one host commonly holds a whole /64)."""
    host = conn.client.host if conn.client else "unknown"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return host


def too_many(detail: str, retry_after: float) -> fastapi.HTTPException:
    """A 429 telling the client how many whole seconds to wait (``Retry-After``)."""
    return fastapi.HTTPException(
        429, detail, headers={"Retry-After": str(max(1, math.ceil(retry_after)))}
    )
