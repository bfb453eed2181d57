"""What a service's processes use, read from ``/proc`` (Linux): resident memory and CPU.

A service is a set of processes: the process group a supervised command leads (a
Celery worker and its pool children, the api), or a process and its descendants
(the Erlang VM of a RabbitMQ node, a PostgreSQL server and its backends).

- RSS: summed over the live processes; pages shared between a Celery worker and its
  forked children are counted once per process, as ``ps`` would show them.
- CPU: ``utime + stime`` of every process of the service (zombies included: they
  keep their figures until reaped), plus ``cutime + cstime``: the CPU of the children
  each of them has reaped. A process that ends inside a measured window is thereby
  still counted, in its parent's figures, as long as that parent belongs to the
  service (a pool child of a Celery worker, a PostgreSQL backend whose connection
  closed). Only the CPU of a service's *root* process ending inside a window would
  be lost; the benchmark never stops one while measuring.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

__all__ = [
    "CpuAccount",
    "MemorySampler",
    "Proc",
    "Service",
    "cpu_seconds",
    "rss_bytes",
    "scan",
]

_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class Proc:
    """One process as ``/proc/PID/stat`` shows it."""

    pid: int
    state: str
    ppid: int
    pgrp: int
    #: utime + stime + cutime + cstime, in seconds.
    cpu: float
    rss: int

    @property
    def live(self) -> bool:
        return self.state not in ("Z", "X")


def _read(pid: int) -> Proc | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    # The command name is in parentheses and may contain spaces or parentheses.
    fields = raw[raw.rindex(b")") + 2 :].split()
    try:
        ticks = sum(int(value) for value in fields[11:15])  # utime stime cutime cstime
        return Proc(
            pid=pid,
            state=fields[0].decode(),
            ppid=int(fields[1]),
            pgrp=int(fields[2]),
            cpu=ticks / _TICKS,
            rss=int(fields[21]) * _PAGE,
        )
    except (IndexError, ValueError):
        return None


def scan() -> dict[int, Proc]:
    """Every process of the machine (zombies included), by pid."""
    table: dict[int, Proc] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            proc = _read(int(entry))
            if proc is not None:
                table[proc.pid] = proc
    return table


class Service:
    """The processes of one service, found from its root's pid.

    ``tree=False``: the process group the root leads (a supervised command);
    ``tree=True``: the root and its descendants.
    """

    def __init__(self, root: Callable[[], int | None], tree: bool = False) -> None:
        self.root = root
        self.tree = tree

    def procs(self, table: dict[int, Proc]) -> list[Proc]:
        """The service's processes in ``table`` (zombies included)."""
        root = self.root()
        if root is None:
            return []
        if not self.tree:
            return [proc for proc in table.values() if proc.pgrp == root]
        children: dict[int, list[int]] = {}
        for proc in table.values():
            children.setdefault(proc.ppid, []).append(proc.pid)
        found: list[Proc] = []
        todo = [root]
        while todo:
            pid = todo.pop()
            if pid in table:
                found.append(table[pid])
                todo.extend(children.get(pid, []))
        return found


def rss_bytes(service: Service, table: dict[int, Proc] | None = None) -> int:
    """Summed RSS of a service's live processes, in bytes."""
    procs = service.procs(scan() if table is None else table)
    return sum(proc.rss for proc in procs if proc.live)


def cpu_seconds(service: Service, table: dict[int, Proc] | None = None) -> float:
    """CPU seconds a service's processes have used so far (and the children they reaped)."""
    return sum(proc.cpu for proc in service.procs(scan() if table is None else table))


class CpuAccount:
    """CPU seconds used by named services over one or more measured windows.

    :meth:`begin` starts counting services (all, or the ones named: a service
    started later begins once it is ready, so that its start-up is not counted),
    :meth:`end` adds what each counted service used since and stops counting.
    :attr:`used` holds the seconds per service.
    """

    def __init__(self, services: dict[str, Service]) -> None:
        self.services = services
        self.used: dict[str, float] = dict.fromkeys(services, 0.0)
        self._base: dict[str, float] = {}

    def _read(self, names: Iterable[str]) -> dict[str, float]:
        table = scan()
        return {name: cpu_seconds(self.services[name], table) for name in names}

    def begin(self, names: Iterable[str] | None = None) -> None:
        self._base.update(self._read(self.services if names is None else names))

    def end(self) -> None:
        now = self._read(self._base)
        for name, base in self._base.items():
            self.used[name] += max(0.0, now[name] - base)
        self._base = {}

    @property
    def total(self) -> float:
        return sum(self.used.values())


class MemorySampler:
    """Samples the RSS of named services on a thread; keeps the peak of each.

    Use it as a context manager around a load phase; :attr:`peak` maps each service
    to its highest summed RSS seen (bytes).
    """

    def __init__(self, services: dict[str, Service], interval: float = 0.25) -> None:
        self.services = services
        self.interval = interval
        self.peak: dict[str, int] = dict.fromkeys(services, 0)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sample(self) -> None:
        table = scan()
        for name, service in self.services.items():
            self.peak[name] = max(self.peak[name], rss_bytes(service, table))

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
