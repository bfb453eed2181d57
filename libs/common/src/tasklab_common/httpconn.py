"""A lean keep-alive HTTP/1.1 connection for the workers' status reports.

A report is a small JSON POST to one URL, sent a few times per task by every worker
process: what a general client does around it (httpx: URL and request objects, a
connection pool, h11's validation of every header, a cookie jar filled from each
response) cost a worker more CPU than the rest of a task. :class:`KeepAlive` is one
socket kept open between requests: the request written in one piece (its head
prebuilt, one ``send``; ``http.client`` sends head and body apart, two packets), the
answer read by the standard library's :class:`http.client.HTTPResponse`. Not
thread-safe: one per thread.
"""

from __future__ import annotations

import http.client
import select
import socket
import ssl
from dataclasses import dataclass
from email.message import Message
from urllib.parse import urlsplit

__all__ = ["KeepAlive", "Reply", "TransportError"]

#: What a request can fail with before an answer is read (no connection, reset, timeout,
#: a malformed answer): the request may or may not have reached the server.
TransportError = (OSError, http.client.HTTPException)


@dataclass(frozen=True)
class Reply:
    status: int
    headers: Message
    body: bytes


class KeepAlive:
    """One connection to the host of ``url``, opened on first use and again whenever the
    server closed it; :meth:`post` sends to ``url``'s path. ``timeout`` bounds the
    connect and each read or write."""

    def __init__(self, url: str, timeout: float) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        self._tls = ssl.create_default_context() if parts.scheme == "https" else None
        self._host = parts.hostname
        self._port = parts.port or (443 if self._tls else 80)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        host = f"[{self._host}]" if ":" in self._host else self._host
        if parts.port is not None:
            host = f"{host}:{parts.port}"
        self._head = f"POST {target} HTTP/1.1\r\nHost: {host}\r\n".encode("ascii")
        self._timeout = timeout
        self._sock: socket.socket | None = None

    def _open(self) -> socket.socket:
        sock = socket.create_connection((self._host, self._port), self._timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._tls is not None:
                sock = self._tls.wrap_socket(sock, server_hostname=self._host)
        except BaseException:
            sock.close()
            raise
        return sock

    def _socket(self) -> socket.socket:
        sock = self._sock
        if sock is not None and _closed_by_peer(sock):
            self.close()
            sock = None
        if sock is None:
            sock = self._sock = self._open()
        return sock

    def post(self, body: bytes, headers: dict[str, str]) -> Reply:
        """POST ``body`` with ``headers`` (the caller's own values, no line breaks); the
        answer. Raises one of :data:`TransportError` when no complete answer came (the
        connection is then closed, the next post opens a new one)."""
        fields = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        request = b"".join(
            (self._head, fields.encode("latin-1"), b"Content-Length: %d\r\n\r\n" % len(body), body)
        )
        try:
            sock = self._socket()
            sock.sendall(request)
            response = http.client.HTTPResponse(sock, method="POST")
            response.begin()
            data = response.read()
        except BaseException:
            self.close()
            raise
        if response.will_close:
            self.close()
        return Reply(response.status, response.headers, data)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _closed_by_peer(sock: socket.socket) -> bool:
    """Whether an idle kept-alive connection has something to read: the server closed
    it (uvicorn does after a few idle seconds), or sent what nobody asked for. Either
    way it cannot carry the next request."""
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))
