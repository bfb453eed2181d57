"""The api's side of the status callback, for the workers' tests.

:class:`FakeApi` is a real HTTP server on loopback: it checks each callback's signature
and nonce like the api, answers ``CallbackReply`` JSON and moves a task only forward
(:func:`~tasklab_common.models.supersedes`), as the task store does. Knobs make it
answer as the api does in the cases a worker must handle: a cancelled task, an unknown
one, a refused or failing call, a slow answer.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self

from tasklab_common.messages import (
    UNKNOWN_TASK_HEADER,
    CallbackReplies,
    CallbackReply,
    StatusUpdate,
    is_batch,
    parse_reports,
)
from tasklab_common.models import TaskStatus, Verdict, supersedes
from tasklab_common.settings import CALLBACK_PATH
from tasklab_common.signing import (
    NONCE_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    CallbackAuthError,
    verify,
)
from tasklab_devtools.waiting import wait_until

__all__ = ["FakeApi", "retried"]


def retried(attempts: int, final: TaskStatus) -> list[tuple[TaskStatus, int]]:
    """The reports of a task that ran ``attempts`` attempts, every one but the last
    failed and retried, the last ending ``final``: what :meth:`FakeApi.history` shows."""
    history: list[tuple[TaskStatus, int]] = []
    for attempt in range(1, attempts + 1):
        history.append((TaskStatus.IN_PROGRESS, attempt))
        history.append((final if attempt == attempts else TaskStatus.RETRYING, attempt))
    return history


@dataclass
class _Answer:
    code: int
    body: Any
    unknown_task: bool = False


class FakeApi:
    """The status callback endpoint, on a free port of 127.0.0.1 once started.

    ``updates``: every report it took (answered 200, or 404 for an unknown task);
    ``refused``: the reports answered ``refuse_with`` instead; ``bad_calls``: why a call
    was not authentic (a bad signature, a replayed nonce).
    """

    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.updates: list[StatusUpdate] = []
        self.refused: list[StatusUpdate] = []
        self.bad_calls: list[str] = []
        #: Tasks answered "do not proceed" (the api has them CANCELLED).
        self.no_proceed: set[str] = set()
        #: Tasks the api does not know (404 with ``UNKNOWN_TASK_HEADER``).
        self.unknown: set[str] = set()
        #: Answer every authentic call with this status code (e.g. 500, 401).
        self.refuse_with: int | None = None
        #: Seconds to wait before answering a report of this status (a slow api).
        self.slow: dict[TaskStatus, float] = {}
        #: Whether it takes batches (a JSON array of reports); False: 422, as an api
        #: that predates them.
        self.takes_batches = True
        #: How many reports each authentic request carried (1: a single report).
        self.request_sizes: list[int] = []
        self._state: dict[str, tuple[TaskStatus, int]] = {}
        self._nonces: set[str] = set()
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._port = 0

    @property
    def url(self) -> str:
        """The callback URL (``API_URL``)."""
        return f"http://127.0.0.1:{self._port}{CALLBACK_PATH}"

    def start(self) -> None:
        """Serve (again: on the same port after :meth:`stop`)."""
        server = ThreadingHTTPServer(("127.0.0.1", self._port), _handler_for(self))
        self._port = server.server_address[1]
        self._server = server
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()

    def stop(self) -> None:
        """Stop serving: calls are refused at the TCP level until :meth:`start`."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def cancel(self, task_id: str) -> None:
        """The task is CANCELLED in the api: every later report changes nothing."""
        with self._lock:
            self._state[task_id] = (TaskStatus.CANCELLED, 0)

    def answer(self, headers: dict[str, str], body: bytes) -> _Answer:
        """The answer to one call."""
        try:
            call = verify(
                self.secret,
                body,
                headers.get(TIMESTAMP_HEADER),
                headers.get(NONCE_HEADER),
                headers.get(SIGNATURE_HEADER),
            )
        except CallbackAuthError as exc:
            self.bad_calls.append(exc.reason)
            return _Answer(401, {"detail": exc.reason})
        batch = is_batch(body)
        if batch and not self.takes_batches:
            return _Answer(422, {"detail": [{"loc": [], "msg": "not an object", "type": "x"}]})
        updates = parse_reports(body)
        with self._lock:
            if call.nonce in self._nonces:
                self.bad_calls.append("replayed nonce")
                return _Answer(403, {"detail": "replayed nonce"})
            self._nonces.add(call.nonce)
            self.request_sizes.append(len(updates))
            delay = max(self.slow.get(update.status, 0.0) for update in updates)
        time.sleep(delay)
        with self._lock:
            if self.refuse_with is not None:
                self.refused.extend(updates)
                return _Answer(self.refuse_with, {"detail": "refused by the test"})
            self.updates.extend(updates)
            replies = [
                CallbackReply.unknown_task() if u.task_id in self.unknown else self._apply(u)
                for u in updates
            ]
        if batch:
            return _Answer(200, json.loads(CallbackReplies.dump_json(replies)))
        if replies[0].unknown:
            return _Answer(404, {"detail": "no such task"}, unknown_task=True)
        return _Answer(200, replies[0].model_dump(mode="json"))

    def _apply(self, update: StatusUpdate) -> CallbackReply:
        if update.task_id in self.no_proceed:
            return CallbackReply(applied=False, status=TaskStatus.CANCELLED, proceed=False)
        status, attempt = self._state.get(update.task_id, (TaskStatus.PENDING, 0))
        applied = supersedes(update.status, update.attempt, status, attempt)
        if applied:
            status, attempt = update.status, update.attempt
            self._state[update.task_id] = (status, attempt)
        return CallbackReply(
            applied=applied,
            status=status,
            proceed=not status.is_final,
            attempts=attempt,
            verdict=Verdict.APPLIED if applied else Verdict.STALE,
        )

    def reports(self, task_id: str) -> list[StatusUpdate]:
        """Every report it took for a task, in order."""
        with self._lock:
            return [u for u in self.updates if u.task_id == task_id]

    def history(self, task_id: str) -> list[tuple[TaskStatus, int]]:
        """``(status, attempt)`` of every report it took for a task, in order."""
        return [(u.status, u.attempt) for u in self.reports(task_id)]

    def last(self, task_id: str) -> StatusUpdate | None:
        found = self.reports(task_id)
        return found[-1] if found else None

    def wait_final(self, task_id: str, timeout: float = 10.0) -> StatusUpdate:
        """The first final report of a task, waiting for it."""

        def final() -> StatusUpdate | None:
            return next((u for u in self.reports(task_id) if u.status.is_final), None)

        wait_until(lambda: final() is not None, f"a final report of task {task_id}", timeout)
        update = final()
        assert update is not None
        return update


def _handler_for(api: FakeApi) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            answer = api.answer(dict(self.headers.items()), body)
            payload = json.dumps(answer.body).encode()
            self.send_response(answer.code)
            if answer.unknown_task:
                self.send_header(UNKNOWN_TASK_HEADER, "1")
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            """Keep the test output quiet."""

    return Handler
