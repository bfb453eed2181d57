"""Resident memory (RSS) of services, read from ``/proc`` (Linux).

A service is a set of processes: the process group a supervised command leads (a
Celery worker and its pool children, the api), or the Erlang VM of a RabbitMQ node
and its helpers. Its RSS is the sum over those processes; pages shared between a
Celery worker and its forked children are counted once per process, as ``ps``
would show them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Self

from tasklab_devtools.procs import descendant_pids, group_pids

__all__ = ["MemorySampler", "PidSource", "group_source", "rss_bytes", "tree_source"]

#: Returns the pids that make up a service right now.
PidSource = Callable[[], list[int]]


def rss_bytes(pid: int) -> int:
    """Resident set size of one process in bytes (0 when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return 0
    return 0


def group_source(pgid: Callable[[], int | None]) -> PidSource:
    """The live processes of the process group led by ``pgid()`` (none when None)."""

    def pids() -> list[int]:
        leader = pgid()
        return group_pids(leader) if leader is not None else []

    return pids


def tree_source(root: Callable[[], int | None]) -> PidSource:
    """``root()`` and its live descendants (none when None)."""

    def pids() -> list[int]:
        pid = root()
        return [pid, *descendant_pids(pid)] if pid is not None else []

    return pids


def total_rss(source: PidSource) -> int:
    """Summed RSS of a service's processes, in bytes."""
    return sum(rss_bytes(pid) for pid in source())


class MemorySampler:
    """Samples the RSS of named services on a thread; keeps the peak of each.

    Use it as a context manager around a load phase; :attr:`peak` maps each service
    to its highest summed RSS seen (bytes).
    """

    def __init__(self, services: dict[str, PidSource], interval: float = 0.25) -> None:
        self.services = services
        self.interval = interval
        self.peak: dict[str, int] = dict.fromkeys(services, 0)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sample(self) -> None:
        for name, source in self.services.items():
            self.peak[name] = max(self.peak[name], total_rss(source))

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def __enter__(self) -> Self:
        self.sample()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.sample()
