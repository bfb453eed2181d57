"""The callback client against a real HTTP server on loopback."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tasklab_common.callback import CallbackClient, CallbackError, housekeeping_url
from tasklab_common.messages import UNKNOWN_TASK_HEADER, StatusUpdate
from tasklab_common.models import TaskStatus
from tasklab_common.signing import NONCE_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, verify

SECRET = "k" * 32


class Api:
    """Answers each request with the next planned status code (then 200)."""

    def __init__(self) -> None:
        self.plan: list[int] = []
        #: A 404 names the task as the api's does (UNKNOWN_TASK_HEADER).
        self.names_unknown = True
        self.seen: list[dict[str, object]] = []
        self.nonces: list[str] = []
        self.connections = 0


@pytest.fixture
def api() -> Iterator[tuple[Api, str]]:
    state = Api()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # connections kept alive, as uvicorn's

        def setup(self) -> None:
            super().setup()
            state.connections += 1

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            call = verify(
                SECRET,
                body,
                self.headers[TIMESTAMP_HEADER],
                self.headers[NONCE_HEADER],
                self.headers[SIGNATURE_HEADER],
            )
            state.nonces.append(call.nonce)
            update = json.loads(body)
            state.seen.append(update)
            code = state.plan.pop(0) if state.plan else 200
            reply = json.dumps({"applied": True, "status": update["status"], "proceed": True})
            self.send_response(code)
            if code == 404 and state.names_unknown:
                self.send_header(UNKNOWN_TASK_HEADER, "1")
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply.encode())

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield state, f"http://127.0.0.1:{server.server_address[1]}/update_task_status_api/"
    server.shutdown()


def client(url: str, max_wait: float = 5.0) -> CallbackClient:
    return CallbackClient(url, SECRET, max_wait=max_wait, backoff=0.01, backoff_max=0.05)


def test_retries_5xx_with_same_event_and_fresh_nonces(api: tuple[Api, str]) -> None:
    state, url = api
    state.plan = [500, 503, 429]
    reply = client(url).report(StatusUpdate(task_id="t1", status=TaskStatus.DONE))
    assert reply.applied
    assert len(state.seen) == 4
    assert len({str(s["event_id"]) for s in state.seen}) == 1
    assert len(set(state.nonces)) == 4


def test_reports_share_one_connection_per_thread(api: tuple[Api, str]) -> None:
    state, url = api
    callbacks = client(url)
    for _ in range(5):
        assert callbacks.report(StatusUpdate(task_id="t1", status=TaskStatus.DONE)).applied
    assert state.connections == 1
    other = threading.Thread(
        target=callbacks.report, args=(StatusUpdate(task_id="t2", status=TaskStatus.DONE),)
    )
    other.start()
    other.join()
    assert (state.connections, len(state.seen)) == (2, 6)
    callbacks.close()
    callbacks.report(StatusUpdate(task_id="t3", status=TaskStatus.DONE))
    assert state.connections == 3


def test_the_apis_404_means_unknown_task(api: tuple[Api, str]) -> None:
    state, url = api
    state.plan = [404]
    reply = client(url).report(StatusUpdate(task_id="gone", status=TaskStatus.IN_PROGRESS))
    assert reply.proceed is False
    assert reply.unknown is True


def test_another_404_is_an_error(api: tuple[Api, str]) -> None:
    """A 404 that does not name the task (a wrong API_URL path, a proxy) must not make
    a worker drop the task as unknown."""
    state, url = api
    state.names_unknown = False
    state.plan = [404]
    with pytest.raises(CallbackError, match="refused: 404"):
        client(url).report(StatusUpdate(task_id="t", status=TaskStatus.IN_PROGRESS))


def test_4xx_is_final(api: tuple[Api, str]) -> None:
    state, url = api
    state.plan = [401]
    with pytest.raises(CallbackError, match="refused: 401"):
        client(url).report(StatusUpdate(task_id="t", status=TaskStatus.DONE))
    assert len(state.seen) == 1


def _closed_port_url() -> str:
    """A callback URL on a loopback port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}/update_task_status_api/"


def test_unreachable_gives_up_after_max_wait() -> None:
    with pytest.raises(CallbackError, match="not delivered"):
        client(_closed_port_url(), max_wait=0.3).report(
            StatusUpdate(task_id="t", status=TaskStatus.DONE)
        )


def test_a_stopping_worker_gives_up_after_the_stopping_wait() -> None:
    """A report to an unreachable api (uninstalled with the workers) that began before
    the stop retries ``stopping_wait`` seconds from when it saw the stop, not
    ``max_wait``; one that never sees a stop keeps retrying."""
    stopping = threading.Event()
    reporter = CallbackClient(
        _closed_port_url(),
        SECRET,
        max_wait=600,
        backoff=0.01,
        backoff_max=0.05,
        stopping=stopping.is_set,
        stopping_wait=0.5,
    )
    outcome: list[BaseException] = []

    def report() -> None:
        try:
            reporter.report(StatusUpdate(task_id="t", status=TaskStatus.DONE))
        except CallbackError as exc:
            outcome.append(exc)

    thread = threading.Thread(target=report, daemon=True)
    thread.start()
    thread.join(1.0)
    assert thread.is_alive() and not outcome, "gave up before the worker was stopping"
    stopping.set()
    began = time.monotonic()
    thread.join(30)
    assert not thread.is_alive(), "still retrying 30 s into the stop"
    assert 0.4 <= time.monotonic() - began < 5
    assert "(the worker is stopping)" in str(outcome[0])


def test_a_stopping_worker_still_delivers_to_a_reachable_api(api: tuple[Api, str]) -> None:
    state, url = api
    state.plan = [503, 503]
    reporter = CallbackClient(
        url, SECRET, backoff=0.01, backoff_max=0.05, stopping=lambda: True, stopping_wait=5
    )
    assert reporter.report(StatusUpdate(task_id="t", status=TaskStatus.DONE)).applied
    assert len(state.seen) == 3


def test_housekeeping_url_sits_next_to_the_callback() -> None:
    assert (
        housekeeping_url("http://api:8080/update_task_status_api/")
        == "http://api:8080/internal/housekeeping"
    )
    assert (
        housekeeping_url("https://x.example/tasklab/update_task_status_api")
        == "https://x.example/tasklab/internal/housekeeping"
    )
