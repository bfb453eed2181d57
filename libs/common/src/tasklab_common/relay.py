"""Status reports of forked worker processes, relayed by the process that forked them.

A prefork Celery worker runs each task in one of its pool processes, one task at a time
each: reports made in separate processes could never travel together in one request,
as the consumer's threads' reports do (:mod:`tasklab_common.batching`). The relay puts
them back in one process. The worker's main process listens on a Unix socket, in a
directory only its own user may enter, before it forks the pool (:class:`ReportRelay`);
each pool process sends its reports there over one connection of its own
(:class:`RelayClient`) and waits for the answer. One thread of the relay reads the
reports of every connection and sends those that arrived together in one request
(:meth:`~tasklab_common.callback.CallbackClient.report_together`), so that the reports
the pool processes make while another request is on its way go in the next one.

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
import selectors
import shutil
import socket
import struct
import tempfile
import threading
from typing import IO, Final, Protocol, Self

from pydantic import ValidationError

from tasklab_common.callback import CallbackClient, CallbackError
from tasklab_common.messages import CallbackReply, StatusUpdate

__all__ = ["RelayClient", "ReportRelay", "Reporter"]

log = logging.getLogger("tasklab.relay")

_LENGTH: Final = struct.Struct("!I")
#: Largest frame either side reads: far above any report (the api takes 1 MiB bodies).
MAX_FRAME: Final = 4 * 1024 * 1024
#: Most bytes the relay reads from a connection at once.
READ_SIZE: Final = 64 * 1024
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

    One thread serves every connection: it waits until reports arrive, reads all those
    that did (at most one per process, which waits for its answer), sends them together
    (:meth:`CallbackClient.report_together`) and answers each; the reports made while a
    request is on its way are the next request's. Made before the fork; only the process
    that made it (:attr:`owner`) serves and closes it.
    """

    def __init__(self, client: CallbackClient) -> None:
        self._client = client
        self.owner = os.getpid()
        self._dir = tempfile.mkdtemp(prefix="tasklab-relay-")  # only this user may enter
        self.path = os.path.join(self._dir, "reports.sock")
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._server.bind(self.path)
            self._server.listen(128)
            self._server.setblocking(False)
        except BaseException:
            self._server.close()
            shutil.rmtree(self._dir, ignore_errors=True)
            raise
        self._wake, self._waker = socket.socketpair()
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._server, selectors.EVENT_READ)
        self._selector.register(self._wake, selectors.EVENT_READ)
        self._closed = threading.Event()
        self._lock = threading.Lock()
        #: Each connection's bytes not yet a whole frame.
        self._conns: dict[socket.socket, bytearray] = {}
        self._thread: threading.Thread | None = None

    def start(self) -> Self:
        self._thread = threading.Thread(target=self._serve, name="report-relay", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop taking reports, drop the connections and remove the socket (in the owner
        only: a forked process that inherited the relay must not shut the owner's
        sockets). A report on its way then is not answered: not relayed, for its process."""
        if self._closed.is_set() or os.getpid() != self.owner:
            return
        self._closed.set()
        with self._lock:
            conns = list(self._conns)
        for sock in (self._server, *conns):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # its process sees the end at once
        if self._thread is None:
            self._close_sockets()
        else:
            with contextlib.suppress(OSError):
                self._waker.send(b"x")  # the serving thread closes the sockets
        shutil.rmtree(self._dir, ignore_errors=True)

    def _serve(self) -> None:
        try:
            while not self._closed.is_set():
                reports: list[tuple[socket.socket, bytes]] = []
                try:
                    reports = self._arrived()
                    if reports and not self._closed.is_set():
                        self._relay(reports)
                except Exception:  # not seen: the relay goes on, and the pool with it
                    log.exception("the report relay failed; going on")
                    for conn, _ in reports:  # unanswered: not relayed, for its process
                        self._drop(conn)
                    self._closed.wait(0.1)
        finally:
            self._close_sockets()

    def _close_sockets(self) -> None:
        with self._lock:
            conns, self._conns = list(self._conns), {}
        for sock in (self._server, self._wake, self._waker, *conns):
            sock.close()
        self._selector.close()

    def _arrived(self) -> list[tuple[socket.socket, bytes]]:
        """The reports that arrived (waiting for the first), with their connections."""
        reports: list[tuple[socket.socket, bytes]] = []
        for key, _ in self._selector.select():
            sock = key.fileobj
            if sock is self._server:
                reports.extend(self._accept())
            elif sock is not self._wake:
                assert isinstance(sock, socket.socket)
                reports.extend((sock, frame) for frame in self._read(sock))
        return reports

    def _accept(self) -> list[tuple[socket.socket, bytes]]:
        """Take the connections waiting; the reports they already sent."""
        reports: list[tuple[socket.socket, bytes]] = []
        while True:
            try:
                conn, _ = self._server.accept()
            except BlockingIOError:
                return reports
            except OSError as exc:
                log.warning("the report relay could not take a connection: %s", exc)
                return reports
            # Never waits on a connection: reads when the selector says so; an answer is
            # far smaller than the socket's buffer, and a process has one at a time.
            conn.setblocking(False)
            with self._lock:
                self._conns[conn] = bytearray()
            self._selector.register(conn, selectors.EVENT_READ)
            reports.extend((conn, frame) for frame in self._read(conn))

    def _read(self, conn: socket.socket) -> list[bytes]:
        """The whole frames ``conn`` sent; none when it closed (then it is dropped), or
        sent what is not a frame (dropped too)."""
        try:
            data = conn.recv(READ_SIZE)
        except BlockingIOError:
            return []
        except OSError:
            data = b""
        if not data:
            self._drop(conn)
            return []
        pending = self._conns[conn]
        pending += data
        frames = []
        while len(pending) >= _LENGTH.size:
            (length,) = _LENGTH.unpack_from(pending)
            if length > MAX_FRAME:
                self._drop(conn)
                return []
            end = _LENGTH.size + length
            if len(pending) < end:
                break
            frames.append(bytes(pending[_LENGTH.size : end]))
            del pending[:end]
        return frames

    def _drop(self, conn: socket.socket) -> None:
        with self._lock:
            self._conns.pop(conn, None)
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(conn)
        conn.close()

    def _relay(self, frames: list[tuple[socket.socket, bytes]]) -> None:
        """Send the reports together; answer each on its connection."""
        reports: list[tuple[socket.socket, StatusUpdate, bytes]] = []
        for conn, frame in frames:
            try:
                reports.append((conn, StatusUpdate.model_validate_json(frame), frame))
            except ValidationError as exc:
                self._answer(
                    conn, REFUSAL + f"the report relay got a malformed report: {exc}".encode()
                )
        try:
            outcomes = self._client.report_together([(update, body) for _, update, body in reports])
        except Exception as exc:
            log.exception("relaying %d reports failed", len(reports))
            failure = CallbackError(f"relaying the report failed: {type(exc).__name__}: {exc}")
            outcomes = [failure] * len(reports)
        for (conn, _, _), outcome in zip(reports, outcomes, strict=True):
            if isinstance(outcome, CallbackError):
                self._answer(conn, REFUSAL + str(outcome).encode())
            else:
                self._answer(conn, REPLY + outcome.model_dump_json().encode())

    def _answer(self, conn: socket.socket, payload: bytes) -> None:
        try:
            _send(conn, payload)
        except OSError:  # the process is gone (or, never seen, it stopped reading)
            self._drop(conn)


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
