"""Status reports of forked worker processes, relayed by the process that forked them.

A prefork Celery worker runs each task in one of its pool processes, one task at a time
each: reports made in separate processes could never travel together in one request,
as the consumer's threads' reports do (:mod:`tasklab_common.batching`). The relay puts
them back in one process. The worker's main process listens on a Unix socket, in a
directory only its own user may enter, before it forks the pool (:class:`ReportRelay`);
each pool process sends its reports there over one connection of its own
(:class:`RelayClient`) and waits for the answer; a thread per connection hands them to
one batching :class:`~tasklab_common.callback.CallbackClient`, so that the reports the
pool processes make while another is on its way go together in the next request.

For the process that makes a report nothing else changes: the relay's client retries it
as its own would (and stops early once the worker is stopping), and the answer comes
back to that process, the api's reply or the refusal's :class:`CallbackError` with the
same text; the process goes on only then. A process interrupted while it waits (a time
limit) drops its connection, so a reply that arrives later is never taken for the
answer to its next report. A relay that cannot be reached is a report not delivered
(:class:`CallbackError`): the task's message goes back to the queue.

Frames, both ways: a 4-byte big-endian length, then the payload. A report's payload is
its JSON; an answer's is one byte, ``R`` (reply) or ``E`` (refusal), then the reply's
JSON or the refusal's text.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import struct
import tempfile
import threading
from typing import IO, Final, Protocol, Self

from pydantic import ValidationError

from tasklab_common.callback import CallbackError
from tasklab_common.messages import CallbackReply, StatusUpdate

__all__ = ["RelayClient", "ReportRelay", "Reporter"]

log = logging.getLogger("tasklab.relay")

_LENGTH: Final = struct.Struct("!I")
#: Largest frame either side reads: far above any report (the api takes 1 MiB bodies).
MAX_FRAME: Final = 4 * 1024 * 1024
REPLY: Final = b"R"
REFUSAL: Final = b"E"


class Reporter(Protocol):
    """What sends a worker's status report and returns the api's reply
    (:class:`~tasklab_common.callback.CallbackClient`, :class:`RelayClient`)."""

    def report(self, update: StatusUpdate) -> CallbackReply: ...


def _send(sock: socket.socket, payload: bytes) -> None:
    sock.sendall(_LENGTH.pack(len(payload)) + payload)


def _receive(reader: IO[bytes]) -> bytes | None:
    """The next frame's payload; None when the other side closed between frames."""
    head = reader.read(_LENGTH.size)
    if not head:
        return None
    if len(head) < _LENGTH.size:
        raise ConnectionError("frame cut short")
    (length,) = _LENGTH.unpack(head)
    if length > MAX_FRAME:
        raise ConnectionError(f"frame of {length} bytes")
    payload = reader.read(length)
    if len(payload) < length:
        raise ConnectionError("frame cut short")
    return payload


def _what(update: StatusUpdate) -> str:
    return f"task {update.task_id} ({update.status})"


class ReportRelay:
    """The forking process's side: reports taken on a Unix socket (:attr:`path`) and
    sent with ``client``, each answered once the api answered it.

    Made before the fork; only the process that made it (:attr:`owner`) serves and
    closes it.
    """

    def __init__(self, client: Reporter) -> None:
        self._client = client
        self.owner = os.getpid()
        self._dir = tempfile.mkdtemp(prefix="tasklab-relay-")  # only this user may enter
        self.path = os.path.join(self._dir, "reports.sock")
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._server.bind(self.path)
            self._server.listen(128)
        except BaseException:
            self._server.close()
            shutil.rmtree(self._dir, ignore_errors=True)
            raise
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._conns: set[socket.socket] = set()

    def start(self) -> Self:
        threading.Thread(target=self._accept, name="report-relay", daemon=True).start()
        return self

    def close(self) -> None:
        """Stop taking reports, drop the connections and remove the socket (in the owner
        only: a forked process that inherited the relay must not shut the owner's
        sockets). A report on its way then is not answered: not relayed, for its process."""
        if self._closed.is_set() or os.getpid() != self.owner:
            return
        self._closed.set()
        with self._lock:
            conns, self._conns = self._conns, set()
        for sock in (self._server, *conns):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # wakes the thread reading it
        self._server.close()
        shutil.rmtree(self._dir, ignore_errors=True)

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self._server.accept()
            except OSError as exc:
                if self._closed.is_set():
                    return
                log.warning("the report relay could not take a connection: %s", exc)
                self._closed.wait(0.1)
                continue
            threading.Thread(
                target=self._serve, args=(conn,), name="report-relay-conn", daemon=True
            ).start()

    def _serve(self, conn: socket.socket) -> None:
        """One process's reports, one at a time, until it closes its connection."""
        with self._lock:
            if self._closed.is_set():
                conn.close()
                return
            self._conns.add(conn)
        with conn, conn.makefile("rb") as reader:
            while True:
                try:
                    frame = _receive(reader)
                    if frame is None:
                        break
                    _send(conn, self._answer(frame))
                except OSError:  # the process is gone, or sent what is not a frame
                    break
        with self._lock:
            self._conns.discard(conn)

    def _answer(self, frame: bytes) -> bytes:
        try:
            update = StatusUpdate.model_validate_json(frame)
        except ValidationError as exc:
            return REFUSAL + f"the report relay got a malformed report: {exc}".encode()
        try:
            return REPLY + self._client.report(update).model_dump_json().encode()
        except CallbackError as exc:
            return REFUSAL + str(exc).encode()
        except Exception as exc:
            log.exception("relaying the report of task %s failed", update.task_id)
            return REFUSAL + f"relaying the report failed: {type(exc).__name__}: {exc}".encode()


class RelayClient:
    """A forked process's side: its reports sent through the relay at ``path``, over one
    connection (opened on first use, and again after a failure). Not thread-safe: one
    report at a time, as a pool process makes them."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._sock: socket.socket | None = None
        self._reader: IO[bytes] | None = None

    def report(self, update: StatusUpdate) -> CallbackReply:
        """The api's reply to ``update``; :class:`CallbackError` when the api refused it,
        it could not be delivered, or the relay could not be reached."""
        try:
            sock, reader = self._connection()
            _send(sock, update.model_dump_json().encode())
            answer = _receive(reader)
        except OSError as exc:
            self.close()
            raise CallbackError(f"report of {_what(update)} not relayed: {exc}") from exc
        except BaseException:  # interrupted (a time limit): the late answer is not read
            self.close()
            raise
        if answer is None:
            self.close()
            raise CallbackError(
                f"report of {_what(update)} not relayed: the relay closed the connection"
            )
        kind, payload = answer[:1], answer[1:]
        if kind == REPLY:
            return CallbackReply.model_validate_json(payload)
        if kind == REFUSAL:
            raise CallbackError(payload.decode(errors="replace"))
        self.close()
        raise CallbackError(f"report of {_what(update)}: the relay answered {kind!r}")

    def _connection(self) -> tuple[socket.socket, IO[bytes]]:
        if self._sock is None or self._reader is None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(self._path)
            except BaseException:
                sock.close()
                raise
            self._sock, self._reader = sock, sock.makefile("rb")
        return self._sock, self._reader

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None
