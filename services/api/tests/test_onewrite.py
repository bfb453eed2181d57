"""A response in one write (``tasklab_api.onewrite``): on a recording transport, and
through a real uvicorn server with the api's protocol."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any, cast

import pytest
import uvicorn
from starlette.types import Receive, Scope, Send

from tasklab_api.guard import guarded_protocol
from tasklab_api.onewrite import OneWrite


class Recording:
    """A transport that records each write."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False
        self.aborted = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closed or self.aborted

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str) -> str:
        return f"extra {name}"


def one_write(transport: Recording, loop: asyncio.AbstractEventLoop) -> OneWrite:
    return OneWrite(cast(asyncio.Transport, transport), loop)


async def test_writes_of_one_turn_leave_together_at_its_end() -> None:
    transport = Recording()
    out = one_write(transport, asyncio.get_running_loop())
    out.write(b"head ")
    out.write(b"")
    out.writelines([b"body", memoryview(b"!")])
    assert transport.writes == [] and out.get_write_buffer_size() == 10
    await asyncio.sleep(0)
    assert transport.writes == [b"head body!"]
    out.write(b"next")  # a later turn: a write of its own
    await asyncio.sleep(0)
    assert transport.writes == [b"head body!", b"next"]


async def test_close_sends_what_is_held_first_and_abort_drops_it() -> None:
    loop = asyncio.get_running_loop()
    closing, aborting = Recording(), Recording()
    first, second = one_write(closing, loop), one_write(aborting, loop)
    first.write(b"answer")
    first.close()
    assert closing.writes == [b"answer"] and closing.closed
    second.write(b"lost")
    second.abort()
    await asyncio.sleep(0)
    assert aborting.writes == [] and aborting.aborted
    assert first.get_extra_info("peername") == "extra peername"  # the rest as is


#: Set by the test once it read the stream's first chunk.
FIRST_CHUNK_READ = threading.Event()


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """``/plain``: a whole answer at once; ``/stream``: a chunk, then (once the test read
    it) two more."""
    if scope["type"] != "http":
        return
    if scope["path"] == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"chunk0;", "more_body": True})
        await asyncio.to_thread(FIRST_CHUNK_READ.wait, 10)
        for n in (1, 2):
            await send({"type": "http.response.body", "body": b"chunk%d;" % n, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        return
    body = b"plain answer"
    headers = [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


#: The writes that reached each connection's real transport.
WRITES: list[list[bytes]] = []


class Counted:
    """A connection's real transport, its writes recorded in :data:`WRITES`."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self.writes: list[bytes] = []
        WRITES.append(self.writes)

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))
        self._transport.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


@pytest.fixture
def server() -> Iterator[tuple[str, int]]:
    base = guarded_protocol(max_head_bytes=32 * 1024, head_timeout=10, body_timeout=30)

    class Protocol(base):  # type: ignore[valid-type, misc]
        def connection_made(self, transport: asyncio.Transport) -> None:
            super().connection_made(cast(asyncio.Transport, Counted(transport)))

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app, http=Protocol, lifespan="off", access_log=False, log_level="error")
    instance = uvicorn.Server(config)
    thread = threading.Thread(target=instance.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not instance.started:
        assert time.monotonic() < deadline, "the server never started"
        time.sleep(0.02)
    WRITES.clear()
    yield sock.getsockname()
    instance.should_exit = True
    thread.join(10)
    sock.close()


def read_until(conn: socket.socket, end: bytes, timeout: float = 5.0) -> bytes:
    conn.settimeout(timeout)
    data = b""
    while not data.endswith(end):
        chunk = conn.recv(65536)
        assert chunk, f"closed after {data!r}"
        data += chunk
    return data


def test_a_whole_answer_leaves_in_one_write_on_a_kept_alive_connection(
    server: tuple[str, int],
) -> None:
    with socket.create_connection(server) as conn:
        for _ in range(2):
            conn.sendall(b"GET /plain HTTP/1.1\r\nHost: test\r\n\r\n")
            answer = read_until(conn, b"plain answer")
            assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
    assert len(WRITES) == 1
    assert len(WRITES[0]) == 2, WRITES  # one write per answer
    assert all(w.startswith(b"HTTP/1.1 200") and w.endswith(b"plain answer") for w in WRITES[0])


def test_a_head_request_and_a_stream_are_not_held_back(server: tuple[str, int]) -> None:
    with socket.create_connection(server) as conn:
        conn.sendall(b"HEAD /plain HTTP/1.1\r\nHost: test\r\n\r\n")
        head = read_until(conn, b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200") and b"content-length: 12" in head
    FIRST_CHUNK_READ.clear()
    with socket.create_connection(server) as conn:
        conn.sendall(b"GET /stream HTTP/1.1\r\nHost: test\r\n\r\n")
        first = read_until(conn, b"chunk0;\r\n")  # not held back until the next chunk
        assert first.startswith(b"HTTP/1.1 200")
        FIRST_CHUNK_READ.set()
        rest = read_until(conn, b"0\r\n\r\n")
        assert b"chunk1;" in rest and b"chunk2;" in rest
