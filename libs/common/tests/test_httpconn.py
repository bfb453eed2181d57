"""The workers' keep-alive connection against real HTTP servers on loopback."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tasklab_common.httpconn import KeepAlive, TransportError


class Server(ThreadingHTTPServer):
    daemon_threads = True
    #: Every connection accepted, and every request read (path, headers, body).
    connections = 0
    requests: list[tuple[str, dict[str, str], bytes]]
    #: After each answer: close the connection without saying so (an idle timeout).
    drop_after_answer = False
    #: Answer with ``Connection: close``.
    say_close = False


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive unless told otherwise
    server: Server

    def setup(self) -> None:
        super().setup()
        self.server.connections += 1

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.requests.append((self.path, dict(self.headers), body))
        reply = b'{"ok": true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        if self.server.say_close:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(reply)
        if self.server.drop_after_answer:
            self.wfile.flush()
            self.close_connection = True

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[Server]:
    srv = Server(("127.0.0.1", 0), Handler)
    srv.requests = []
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv
    srv.shutdown()
    srv.server_close()


def url(srv: Server, path: str = "/update_task_status_api/?x=1") -> str:
    return f"http://127.0.0.1:{srv.server_address[1]}{path}"


def test_posts_travel_on_one_kept_alive_connection(server: Server) -> None:
    conn = KeepAlive(url(server), timeout=5)
    for n in range(5):
        reply = conn.post(b'{"n": %d}' % n, {"Content-Type": "application/json", "X-A": "b"})
        assert (reply.status, reply.body) == (200, b'{"ok": true}')
        assert reply.header("Content-Type") == reply.header("content-type") == "application/json"
    assert server.connections == 1
    path, headers, body = server.requests[-1]
    assert path == "/update_task_status_api/?x=1"
    assert headers["Host"] == f"127.0.0.1:{server.server_address[1]}"
    assert (headers["X-A"], headers["Content-Length"], body) == ("b", "8", b'{"n": 4}')
    conn.close()


@pytest.mark.parametrize("how", ["drop_after_answer", "say_close"])
def test_a_connection_the_server_closed_is_replaced_before_the_next_post(
    server: Server, how: str
) -> None:
    """A server that closed an idle connection (uvicorn does after a few seconds), with
    or without saying so: the next post opens a new one instead of failing."""
    setattr(server, how, True)
    conn = KeepAlive(url(server), timeout=5)
    for _ in range(3):
        assert conn.post(b"{}", {}).status == 200
        time.sleep(0.2)  # idle: the server's close has arrived
    assert server.connections == 3
    assert len(server.requests) == 3


def test_no_answer_is_a_transport_error_and_the_next_post_reconnects(server: Server) -> None:
    # A listener that accepts and closes without answering.
    mute = socket.create_server(("127.0.0.1", 0))

    def accept_and_close() -> None:
        peer, _ = mute.accept()
        peer.recv(65536)
        peer.close()

    threading.Thread(target=accept_and_close, daemon=True).start()
    conn = KeepAlive(f"http://127.0.0.1:{mute.getsockname()[1]}/x", timeout=5)
    with pytest.raises(TransportError):
        conn.post(b"{}", {})
    mute.close()
    with pytest.raises(TransportError):  # refused now: a new connection was tried
        conn.post(b"{}", {})


def test_a_server_that_does_not_answer_in_time_is_a_transport_error() -> None:
    with socket.create_server(("127.0.0.1", 0)) as silent:
        conn = KeepAlive(f"http://127.0.0.1:{silent.getsockname()[1]}/x", timeout=0.2)
        with pytest.raises(TransportError):
            conn.post(b"{}", {})


def test_tls_to_a_plain_server_is_a_transport_error(server: Server) -> None:
    conn = KeepAlive(url(server).replace("http://", "https://"), timeout=5)
    with pytest.raises(TransportError):
        conn.post(b"{}", {})


@pytest.mark.parametrize("bad", ["ftp://h/x", "http:///x", "api:8080/x"])
def test_only_http_urls(bad: str) -> None:
    with pytest.raises(ValueError, match="not an http"):
        KeepAlive(bad, timeout=1)


def _raw_server(answer: bytes) -> tuple[socket.socket, str]:
    """A listener that answers every request on one connection with ``answer`` (raw
    bytes, then closes)."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        peer, _ = listener.accept()
        with peer:
            peer.recv(65536)
            peer.sendall(answer)

    threading.Thread(target=serve, daemon=True).start()
    return listener, f"http://127.0.0.1:{listener.getsockname()[1]}/x"


@pytest.mark.parametrize(
    ("answer", "body"),
    [
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b'4\r\n{"a"\r\n6;ext=1\r\n: 1}  \r\n0\r\nX-Trailer: t\r\n\r\n',
            b'{"a": 1}  ',
        ),
        (b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n{}", b"{}"),
        (b"HTTP/1.1 404 Not Found\r\nX-Unknown-Task: 1\r\nContent-Length: 2\r\n\r\n{}", b"{}"),
    ],
)
def test_answers_of_every_framing_are_read_whole(answer: bytes, body: bytes) -> None:
    listener, address = _raw_server(answer)
    with listener:
        reply = KeepAlive(address, timeout=5).post(b"{}", {})
    assert reply.body == body
    assert reply.status in (200, 404)
    if reply.status == 404:
        assert reply.header("x-unknown-task") == "1"


@pytest.mark.parametrize(
    "answer",
    [
        b"SMTP 220 hello\r\n\r\n",
        b"HTTP/1.1 2x0 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-Long: " + b"a" * 10_000 + b"\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Le",
    ],
)
def test_a_malformed_or_cut_answer_is_a_transport_error(answer: bytes) -> None:
    listener, address = _raw_server(answer)
    with listener, pytest.raises(TransportError):
        KeepAlive(address, timeout=5).post(b"{}", {})
