"""Limits on what a client may make the api's HTTP server hold, before the app sees it.

uvicorn (with httptools) buffers a request's head without limit and waits for it, and
for a body, for ever: an 8 MB header was answered 200, and connections that sent their
head or body a byte at a time were held open indefinitely. :func:`guarded_protocol`
makes a subclass of uvicorn's protocol that, per connection:

- answers 431 and closes once a request's head (request line and headers) passes
  ``max_head_bytes``;
- answers 408 and closes when a head is not complete ``head_timeout`` seconds after the
  connection opened or the previous request ended (a slow-header client);
- closes when a request's body is not complete ``body_timeout`` seconds after its head
  (a slow-body client; the app sees a disconnect, nothing is applied).

How many connections are open at once is bounded by uvicorn's ``limit_concurrency``
(503 beyond it). In front of the api an ingress or proxy should apply its own limits as
well (see README, "Security").
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, cast

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from tasklab_api.onewrite import OneWrite

__all__ = ["guarded_protocol"]


def _reply_and_close(transport: asyncio.Transport, status: bytes, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    transport.write(
        b"HTTP/1.1 " + status + b"\r\ncontent-type: application/json\r\n"
        b"content-length: " + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n" + body
    )
    transport.close()


class _GuardedProtocol(HttpToolsProtocol):
    max_head_bytes: int = 32 * 1024
    head_timeout: float = 10.0
    body_timeout: float = 30.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True  # between two requests, or inside a request's head
        self._head_bytes = 0  # bytes received while in a head (an upper bound)
        self._rejected = False
        self._timer: asyncio.TimerHandle | None = None

    def _arm(self, seconds: float, fire: Any) -> None:
        self._disarm()
        self._timer = self.loop.call_later(seconds, fire)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _reject(self, status: bytes, detail: str) -> None:
        self._disarm()
        self._rejected = True
        _reply_and_close(self.transport, status, detail)

    def _head_too_large(self) -> None:
        self._reject(
            b"431 Request Header Fields Too Large",
            f"request line and headers larger than {self.max_head_bytes} bytes",
        )

    # -- asyncio.Protocol

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        # A response's head and body in one write (see tasklab_api.onewrite).
        super().connection_made(cast(asyncio.Transport, OneWrite(transport, self.loop)))
        self._arm(self.head_timeout, self._head_too_slow)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._rejected:
            return
        if self._in_head:
            self._head_bytes += len(data)
            if self._timer is None:  # the first bytes after a keep-alive pause
                self._arm(self.head_timeout, self._head_too_slow)
        super().data_received(data)
        # A head still unfinished that is already too large (its exact size is checked
        # when it completes, in on_headers_complete).
        if self._in_head and not self._rejected and self._head_bytes > self.max_head_bytes:
            self._head_too_large()

    # -- httptools parser callbacks

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._disarm()
        size = len(self.url) + sum(len(n) + len(v) + 4 for n, v in self.headers)
        if size > self.max_head_bytes:
            self._head_too_large()
            return
        super().on_headers_complete()
        if self._has_body():
            self._arm(self.body_timeout, self._body_too_slow)

    def on_body(self, body: bytes) -> None:
        if not self._rejected:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self._rejected:
            return
        self._disarm()
        super().on_message_complete()
        # The next request's head starts here (keep-alive, pipelining); its timer starts
        # with its first bytes, uvicorn's keep-alive timeout covers the pause before.
        self._in_head = True
        self._head_bytes = 0

    # -- the limits

    def _has_body(self) -> bool:
        for name, value in self.headers:
            if name == b"transfer-encoding" or (name == b"content-length" and value != b"0"):
                return True
        return False

    def _head_too_slow(self) -> None:
        self._timer = None
        if self.transport.is_closing() or not self._in_head:
            return
        if self._head_bytes == 0 or (self.cycle is not None and not self.cycle.response_complete):
            # Nothing sent at all, or a pipelined head while a response still streams:
            # close without writing into the connection.
            self.transport.close()
            return
        self._reject(
            b"408 Request Timeout", f"request headers not received within {self.head_timeout:g} s"
        )

    def _body_too_slow(self) -> None:
        self._timer = None
        if not self.transport.is_closing():
            self._rejected = True
            self.transport.close()  # the app sees a disconnect: nothing is applied


def guarded_protocol(
    max_head_bytes: int, head_timeout: float, body_timeout: float
) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol with the limits above, each response sent in one
    write (:mod:`tasklab_api.onewrite`); pass it as ``Config(http=)``."""
    return type(
        "GuardedHttpToolsProtocol",
        (_GuardedProtocol,),
        {
            "max_head_bytes": max_head_bytes,
            "head_timeout": head_timeout,
            "body_timeout": body_timeout,
        },
    )
