"""A small process supervisor for the local stack and the e2e tests.

Every :class:`ManagedProcess` runs in its own session, so it leads its own process
group: stopping it signals the whole group (a Celery worker and its pool children,
uvicorn and its reloader, ...), and a Ctrl-C in the terminal reaches only the
supervisor, which then stops the services in order.

No process is left behind:

* :meth:`ManagedProcess.terminate` sends SIGTERM to the group, waits, then SIGKILLs
  whatever is left of the group;
* each child gets a parent-death signal (``prctl(PR_SET_PDEATHSIG)``), so it is told to
  stop even when the supervising Python process is killed with SIGKILL;
* an ``atexit`` hook stops the groups of processes still running when Python exits.

Linux only (``/proc`` and ``prctl``).

Why not honcho or supervisor: the tests drive each process on its own (the fault
suite SIGKILLs a worker's whole process group, restarts the api, reads one service's
log), which honcho's manager (start all, stop all when one exits) does not offer, and
supervisor is a daemon of its own, configured by files and driven over XML-RPC, that
would itself have to be started, found and stopped by every suite; neither gives the
children a parent-death signal, so a killed test run would leave them running.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from pathlib import Path
from queue import SimpleQueue
from types import FrameType
from typing import IO, Any

import httpx

__all__ = [
    "ManagedProcess",
    "Supervisor",
    "descendant_pids",
    "free_port",
    "group_pids",
    "wait_http_ok",
]

_PR_SET_PDEATHSIG = 1
_PALETTE = (36, 33, 35, 32, 34, 31, 96, 93, 95, 92, 94, 91)
_print_lock = threading.Lock()


# --------------------------------------------------------------------------- /proc


def _read_stat(pid: int) -> tuple[str, int, int] | None:
    """``(state, ppid, pgrp)`` of a process from ``/proc/PID/stat``, None if gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    # The command name is in parentheses and may contain spaces or parentheses.
    fields = raw[raw.rindex(b")") + 2 :].split()
    return fields[0].decode(), int(fields[1]), int(fields[2])


def _all_pids() -> list[int]:
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]


def _live_stats() -> dict[int, tuple[int, int]]:
    """``{pid: (ppid, pgrp)}`` of every process that is not a zombie."""
    stats: dict[int, tuple[int, int]] = {}
    for pid in _all_pids():
        stat = _read_stat(pid)
        if stat is not None and stat[0] not in ("Z", "X"):
            stats[pid] = (stat[1], stat[2])
    return stats


def group_pids(pgid: int) -> list[int]:
    """Live (non-zombie) processes whose process group is ``pgid``."""
    return sorted(pid for pid, (_, pgrp) in _live_stats().items() if pgrp == pgid)


def descendant_pids(pid: int) -> list[int]:
    """Live (non-zombie) children, grandchildren, ... of ``pid``."""
    children: dict[int, list[int]] = {}
    for child, (ppid, _) in _live_stats().items():
        children.setdefault(ppid, []).append(child)
    found: list[int] = []
    todo = list(children.get(pid, []))
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return sorted(found)


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _wait_group_gone(pgid: int, deadline: float) -> bool:
    while group_pids(pgid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


# ------------------------------------------------------------------ spawning


def _parent_death_preexec(sig: int) -> Callable[[], None]:
    """A ``preexec_fn`` that asks the kernel to send ``sig`` when our thread dies."""
    libc = ctypes.CDLL(None, use_errno=True)  # loaded here, not in the forked child
    parent = os.getpid()

    def preexec() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), sig)

    return preexec


_spawn_requests: SimpleQueue[tuple[Callable[[], subprocess.Popen[bytes]], Future[Any]]] = (
    SimpleQueue()
)
_spawner_lock = threading.Lock()
_spawner: threading.Thread | None = None


def _spawner_loop() -> None:
    while True:
        make, future = _spawn_requests.get()
        try:
            future.set_result(make())
        except BaseException as exc:
            future.set_exception(exc)


def _spawn(make: Callable[[], subprocess.Popen[bytes]]) -> subprocess.Popen[bytes]:
    """Run ``make`` (a Popen call) on a thread that lives as long as the process.

    The kernel sends the parent-death signal when the *thread* that forked the child
    ends, not the process. A process started from a short-lived thread (say, a timer
    that brings a broker back during a fault test) would be killed as soon as that
    thread finished, so such calls are handed to one long-lived daemon thread.
    """
    global _spawner
    if threading.current_thread() is threading.main_thread():
        return make()
    with _spawner_lock:
        if _spawner is None:
            _spawner = threading.Thread(target=_spawner_loop, name="spawner", daemon=True)
            _spawner.start()
    future: Future[subprocess.Popen[bytes]] = Future()
    _spawn_requests.put((make, future))
    return future.result()


# ------------------------------------------------------------------ ManagedProcess

#: Processes started and not yet terminated: their groups may still have members.
_unstopped: set[ManagedProcess] = set()


def _stop_all_at_exit() -> None:
    """Last resort when Python exits: stop the groups of processes not terminated."""
    pgids = [proc.pid for proc in list(_unstopped) if proc.pid is not None]
    pgids = [pgid for pgid in pgids if group_pids(pgid)]
    for pgid in pgids:
        _signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + 5
    for pgid in pgids:
        if not _wait_group_gone(pgid, deadline):
            _signal_group(pgid, signal.SIGKILL)


atexit.register(_stop_all_at_exit)


class ManagedProcess:
    """One supervised command, running as the leader of its own process group.

    Output (stdout and stderr together) goes to ``log_path`` when given, appended to
    across restarts (the file is truncated on the first start). Otherwise every line is
    copied to our stdout as ``name | line``, the name coloured on a terminal, and, when
    ``copy_path`` is given, to that file as is (truncated and appended to the same way:
    what ``make logs`` follows).
    """

    def __init__(
        self,
        name: str,
        argv: list[str],
        env: dict[str, str],
        cwd: Path | None = None,
        log_path: Path | None = None,
        copy_path: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = dict(env)
        self.cwd = cwd
        self.log_path = log_path
        self.copy_path = copy_path
        #: Width the name is padded to in prefixed output (the Supervisor aligns names).
        self.prefix_width = len(name)
        self._popen: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None
        self._started_once = False

    def __repr__(self) -> str:
        return f"ManagedProcess({self.name!r}, pid={self.pid})"

    @property
    def pid(self) -> int | None:
        """Pid of the main process (also its process group id); None before start."""
        return None if self._popen is None else self._popen.pid

    @property
    def returncode(self) -> int | None:
        """Exit code of the last run (negative: killed by that signal); None if running."""
        return None if self._popen is None else self._popen.poll()

    def start(self) -> None:
        """Start the command in a new session (process group)."""
        if self.running():
            raise RuntimeError(f"{self.name} is already running (pid {self.pid})")
        log_file: IO[bytes] | None = None
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            log_file = self.log_path.open("ab" if self._started_once else "wb")
        stdout: IO[bytes] | int = log_file if log_file is not None else subprocess.PIPE
        preexec = _parent_death_preexec(signal.SIGTERM)
        try:
            self._popen = _spawn(
                lambda: subprocess.Popen(
                    self.argv,
                    env=self.env,
                    cwd=self.cwd,
                    stdin=subprocess.DEVNULL,
                    stdout=stdout,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    preexec_fn=preexec,
                )
            )
        finally:
            if log_file is not None:
                log_file.close()
        copy: IO[bytes] | None = None
        if self._popen.stdout is not None and self.copy_path is not None:
            self.copy_path.parent.mkdir(parents=True, exist_ok=True)
            copy = self.copy_path.open("ab" if self._started_once else "wb")
        self._started_once = True
        _unstopped.add(self)
        if self._popen.stdout is not None:
            self._reader = threading.Thread(
                target=self._copy_output,
                args=(self._popen.stdout, copy),
                name=f"output-{self.name}",
                daemon=True,
            )
            self._reader.start()

    def _copy_output(self, pipe: IO[bytes], copy: IO[bytes] | None) -> None:
        with pipe, copy or contextlib.nullcontext():
            for raw in iter(pipe.readline, b""):
                line = raw.decode(errors="replace").rstrip("\r\n")
                with _print_lock:
                    out = sys.stdout
                    out.write(f"{self._prefix(out)}{line}\n")
                    out.flush()
                if copy is not None:
                    copy.write(raw if raw.endswith(b"\n") else raw + b"\n")
                    copy.flush()

    def _prefix(self, out: IO[str]) -> str:
        label = self.name.ljust(self.prefix_width)
        colour = "NO_COLOR" not in os.environ and (
            bool(os.environ.get("FORCE_COLOR")) or out.isatty()
        )
        if not colour:
            return f"{label} | "
        code = _PALETTE[sum(self.name.encode()) % len(_PALETTE)]
        return f"\033[{code}m{label} |\033[0m "

    def running(self) -> bool:
        """Whether the main process is still running."""
        return self._popen is not None and self._popen.poll() is None

    def wait(self, timeout: float | None = None) -> int | None:
        """Wait for the main process to exit; its exit code, or None on timeout."""
        if self._popen is None:
            return None
        try:
            return self._popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def terminate(self, timeout: float = 30) -> int | None:
        """Stop the whole group: SIGTERM, wait up to ``timeout``, then SIGKILL.

        Returns the main process's exit code (None if it was never started). When the
        call returns, no live process of the group remains.
        """
        if self._popen is None:
            return None
        pgid = self._popen.pid
        deadline = time.monotonic() + timeout
        _signal_group(pgid, signal.SIGTERM)
        code = self.wait(max(0.0, deadline - time.monotonic()))
        if code is None or not _wait_group_gone(pgid, deadline):
            _signal_group(pgid, signal.SIGKILL)
            code = self.wait(10)
            _wait_group_gone(pgid, time.monotonic() + 10)
        _unstopped.discard(self)
        if self._reader is not None:
            self._reader.join(timeout=2)
            self._reader = None
        return code

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to the main process only (its children are not signalled)."""
        if self.running() and self.pid is not None:
            os.kill(self.pid, sig)

    def kill_group(self, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to every process of the group (also after the leader died)."""
        if self.pid is not None:
            _signal_group(self.pid, sig)

    def restart(self, timeout: float = 30) -> None:
        """Terminate (see :meth:`terminate`) and start again; the log is appended to."""
        self.terminate(timeout)
        self.start()

    def children_pids(self) -> list[int]:
        """Pids of the main process's live direct children (e.g. Celery pool processes)."""
        if not self.running() or self.pid is None:
            return []
        parent = self.pid
        return sorted(pid for pid, (ppid, _) in _live_stats().items() if ppid == parent)

    def log_text(self) -> str:
        """Everything the process wrote to ``log_path`` ('' before the first write)."""
        if self.log_path is None:
            raise RuntimeError(f"{self.name} writes to stdout, not to a log file")
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of :meth:`log_text`."""
        return "\n".join(self.log_text().splitlines()[-lines:])


# ------------------------------------------------------------------ Supervisor


class Supervisor:
    """Starts, watches and stops a set of :class:`ManagedProcess` (by unique name)."""

    def __init__(self, processes: Iterable[ManagedProcess] = ()) -> None:
        self.processes: dict[str, ManagedProcess] = {}
        for proc in processes:
            self.add(proc)

    def add(self, proc: ManagedProcess) -> ManagedProcess:
        """Register a process (not started); names must be unique."""
        if proc.name in self.processes:
            raise ValueError(f"a process named {proc.name!r} is already supervised")
        self.processes[proc.name] = proc
        width = max(len(name) for name in self.processes)
        for each in self.processes.values():
            each.prefix_width = width
        return proc

    def start_all(self) -> None:
        """Start every process that is not running, in the order they were added."""
        for proc in self.processes.values():
            if not proc.running():
                proc.start()

    def stop_all(self, timeout: float = 30) -> None:
        """Terminate every process, in reverse order; no process of any group is left."""
        for proc in reversed(list(self.processes.values())):
            proc.terminate(timeout)
        for proc in self.processes.values():
            if proc.pid is not None and group_pids(proc.pid):
                proc.kill_group(signal.SIGKILL)
                _wait_group_gone(proc.pid, time.monotonic() + 10)

    def run_forever(self, poll_interval: float = 0.5) -> int:
        """Run until Ctrl-C/SIGTERM (exit code 0) or until a process dies (exit code 1).

        Starts the processes never started (one that was started and has died counts
        as dead), and stops all of them before returning. A second Ctrl-C while
        stopping kills the remaining groups at once. Call it from the main thread.
        """
        stop = threading.Event()
        signals_seen = 0

        def on_signal(signum: int, frame: FrameType | None) -> None:
            nonlocal signals_seen
            signals_seen += 1
            if signals_seen > 1:
                for proc in self.processes.values():
                    proc.kill_group(signal.SIGKILL)
            stop.set()

        previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        code = 0
        try:
            for proc in self.processes.values():
                if proc.pid is None:
                    proc.start()
            while not stop.is_set():
                dead = [proc for proc in self.processes.values() if not proc.running()]
                if dead:
                    for proc in dead:
                        _say(f"{proc.name} exited unexpectedly (code {proc.returncode})")
                    code = 1
                    break
                stop.wait(poll_interval)
            if code == 0:
                _say("stopping")
        finally:
            self.stop_all()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return code


def _say(message: str) -> None:
    with _print_lock:
        print(f"[supervisor] {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------ helpers


def wait_http_ok(
    url: str,
    timeout: float,
    *,
    auth: tuple[str, str] | None = None,
    process: ManagedProcess | None = None,
) -> None:
    """Poll ``url`` until it answers HTTP 200.

    Raises :class:`TimeoutError` after ``timeout`` seconds (with the last answer or
    error), or :class:`RuntimeError` as soon as ``process`` (if given) has exited.
    """
    deadline = time.monotonic() + timeout
    last = "no answer"
    with httpx.Client(timeout=2.0, auth=auth) as client:
        while True:
            if process is not None and not process.running():
                raise RuntimeError(
                    f"{process.name} exited (code {process.returncode}) before {url} answered 200"
                )
            try:
                response = client.get(url)
            except httpx.HTTPError as exc:
                last = f"{type(exc).__name__}: {exc}"
            else:
                if response.status_code == 200:
                    return
                last = f"HTTP {response.status_code}: {response.text[:200]}"
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{url} did not answer 200 within {timeout:g} s ({last})")
            time.sleep(0.2)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now (another process may take it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
