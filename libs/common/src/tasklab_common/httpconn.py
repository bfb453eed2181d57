"""A lean keep-alive HTTP/1.1 connection for the workers' status reports.

A report is a small JSON POST to one URL, sent a few times per task by every worker
process: what a general client does around it (httpx: URL and request objects, a
connection pool, h11's validation of every header, a cookie jar filled from each
response) cost a worker more CPU than the rest of a task. :class:`KeepAlive` is one
socket kept open between requests: the request written in one piece (its head
prebuilt, one ``send``; ``http.client`` sends head and body apart, two packets), the
answer read from one buffered reader kept with the socket (``http.client`` makes a new
file object for every response and parses its headers with the e-mail parser: a tenth
of a worker's CPU in the drain's profile). Not thread-safe: one per thread.
"""

from __future__ import annotations

import http.client
import select
import socket
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import BinaryIO
from urllib.parse import urlsplit

__all__ = ["KeepAlive", "Reply", "TransportError"]

#: What a request can fail with before an answer is read (no connection, reset, timeout,
#: a malformed answer): the request may or may not have reached the server.
TransportError = (OSError, http.client.HTTPException)


#: Longest status or header line, most header lines, largest body read.
MAX_LINE = 8192
MAX_HEADERS = 100
MAX_BODY = 16 * 1024 * 1024


@dataclass(frozen=True)
class Reply:
    status: int
    #: Header names in lower case (see :meth:`header`).
    headers: Mapping[str, str]
    body: bytes

    def header(self, name: str) -> str | None:
        """A header's value (the last one of that name), whatever the case of ``name``."""
        return self.headers.get(name.lower())


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
        self._reader: BinaryIO | None = None

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

    def _socket(self) -> tuple[socket.socket, BinaryIO]:
        sock, reader = self._sock, self._reader
        if sock is not None and _closed_by_peer(sock):
            self.close()
            sock = reader = None
        if sock is None or reader is None:
            sock = self._sock = self._open()
            reader = self._reader = sock.makefile("rb")
        return sock, reader

    def post(self, body: bytes, headers: dict[str, str]) -> Reply:
        """POST ``body`` with ``headers`` (the caller's own values, no line breaks); the
        answer. Raises one of :data:`TransportError` when no complete answer came (the
        connection is then closed, the next post opens a new one)."""
        fields = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        request = b"".join(
            (self._head, fields.encode("latin-1"), b"Content-Length: %d\r\n\r\n" % len(body), body)
        )
        try:
            sock, reader = self._socket()
            sock.sendall(request)
            reply, will_close = _read_reply(reader)
        except BaseException:
            self.close()
            raise
        if will_close:
            self.close()
        return reply

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _line(reader: BinaryIO) -> bytes:
    line = reader.readline(MAX_LINE + 1)
    if len(line) > MAX_LINE:
        raise http.client.LineTooLong("status or header line")
    return line


def _read_reply(reader: BinaryIO) -> tuple[Reply, bool]:
    """The answer to the request just sent, and whether the server closes the
    connection after it. Raises one of :data:`TransportError` for anything short of a
    complete HTTP/1.x answer."""
    status_line = _line(reader)
    if not status_line:
        raise http.client.RemoteDisconnected("the server closed the connection without answering")
    version, _, rest = status_line.partition(b" ")
    code = rest[:3]
    well_formed = code.isdigit() and rest[3:4] in (b" ", b"\r", b"\n")
    if not version.startswith(b"HTTP/1.") or not well_formed:
        raise http.client.BadStatusLine(status_line.decode("latin-1")[:100])
    headers: dict[str, str] = {}
    while (line := _line(reader)) not in (b"\r\n", b"\n"):
        if not line:
            raise http.client.IncompleteRead(b"", None)
        if len(headers) >= MAX_HEADERS:
            raise http.client.HTTPException(f"more than {MAX_HEADERS} headers")
        name, colon, value = line.partition(b":")
        if not colon:
            raise http.client.HTTPException(f"not a header: {line[:100]!r}")
        headers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
    will_close = version == b"HTTP/1.0" or headers.get("connection", "").lower() == "close"
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = _read_chunked(reader)
    elif "content-length" in headers:
        try:
            length = int(headers["content-length"])
        except ValueError:
            raise http.client.HTTPException("bad Content-Length") from None
        if not 0 <= length <= MAX_BODY:
            raise http.client.HTTPException(f"Content-Length {length} out of range")
        body = _read_exactly(reader, length)
    else:  # the body ends with the connection
        body = reader.read(MAX_BODY + 1)
        if len(body) > MAX_BODY:
            raise http.client.HTTPException("answer too large")
        will_close = True
    return Reply(int(code), headers, body), will_close


def _read_exactly(reader: BinaryIO, length: int) -> bytes:
    data = reader.read(length)
    if len(data) < length:
        raise http.client.IncompleteRead(data, length - len(data))
    return data


def _read_chunked(reader: BinaryIO) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        head = _line(reader).split(b";", 1)[0].strip()
        try:
            length = int(head, 16)
        except ValueError:
            raise http.client.HTTPException(f"bad chunk size {head[:20]!r}") from None
        if length == 0:
            break
        size += length
        if size > MAX_BODY:
            raise http.client.HTTPException("answer too large")
        chunks.append(_read_exactly(reader, length))
        if _line(reader) not in (b"\r\n", b"\n"):
            raise http.client.HTTPException("chunk not followed by a line end")
    while _line(reader) not in (b"\r\n", b"\n", b""):  # trailers, ignored
        pass
    return b"".join(chunks)


def _closed_by_peer(sock: socket.socket) -> bool:
    """Whether an idle kept-alive connection has something to read: the server closed
    it (uvicorn does after a few idle seconds), or sent what nobody asked for. Either
    way it cannot carry the next request."""
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))
