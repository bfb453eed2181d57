"""The drain: N preloaded no-op tasks, as fast as the system or a peer records them.

The same measure for the system and every peer:

1. the workers are paused (they take no task); the run's CPU account begins;
2. N no-op tasks are submitted (to the api for the system; ``send_task`` with publisher
   confirms for a Celery peer) and wait in the broker;
3. the workers resume; the run waits until the last task submitted reads final where
   the user would read it (the api, the result backend, Flower's API), polling it
   every ``poll`` seconds (0.5: reading a task costs the api about as much as a
   status report), then reads the final status of all N there; the CPU
   account ends when the last task reads final (the bulk read is not counted, and if
   it finds tasks not final yet, counting goes on);
4. **rate** = (N - 1) / (last - first final status), with the times *recorded* with
   the statuses (the api's ``finished_at``, the backend's ``date_done``, Flower's
   ``succeeded``); **CPU per task** = the CPU seconds of all the system's processes
   (api, workers with their pool processes, broker, database, Flower) during steps
   2 and 3, divided by N (see :mod:`bench.procstat`).

The CPU of whoever submits (the load generator, the process calling ``send_task``) is
not counted, for the system as for the peers.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import time
from collections.abc import Iterator
from typing import Any

from bench.common import Context, say
from bench.procstat import CpuAccount, Service
from bench.profiling import profile

__all__ = ["DrainTarget", "drain"]


class DrainTarget(abc.ABC):
    """A system or a peer that can be drained (see the module's docstring)."""

    #: Short name (results' key) and what the table calls it.
    name: str
    label: str
    #: Where its final statuses are read.
    where: str
    #: Services whose CPU is counted only once they are ready after :meth:`resume`
    #: (a process started there: its own start-up is not the tasks' cost).
    late: frozenset[str] = frozenset()

    @abc.abstractmethod
    def services(self) -> dict[str, Service]:
        """Every process whose CPU is counted."""

    async def reset(self) -> None:  # noqa: B027 (optional: most targets need nothing)
        """Before a run, outside the measurement (e.g. empty the result table)."""

    @abc.abstractmethod
    async def pause(self) -> None:
        """Stop the workers from taking tasks."""

    @abc.abstractmethod
    async def preload(self, tasks: int) -> list[str]:
        """Submit ``tasks`` no-op tasks; their ids, in submission order."""

    @abc.abstractmethod
    async def resume(self, account: CpuAccount) -> None:
        """Let the workers take tasks; begin the ``late`` services in ``account``."""

    @abc.abstractmethod
    async def is_final(self, task_id: str) -> bool:
        """Whether the task reads final (one cheap read, as a user polling it)."""

    @abc.abstractmethod
    async def final_times(self, ids: list[str]) -> dict[str, float]:
        """Epoch seconds each final task among ``ids`` was recorded final."""

    async def cleanup(self) -> None:  # noqa: B027 (optional)
        """After a failed run: leave nothing queued for the next one."""

    def count(self, tasks: int) -> int:
        """How many tasks the recorded times span (more when markers are added)."""
        return tasks

    def profiled(self) -> list[tuple[str, int | None, bool]]:
        """What ``--profile`` records during the processing: (name, pid, subprocesses)."""
        return []


@contextlib.contextmanager
def _profiles(ctx: Context, target: DrainTarget, enabled: bool) -> Iterator[None]:
    with contextlib.ExitStack() as stack:
        if enabled:
            for name, pid, subprocesses in target.profiled():
                stack.enter_context(profile(ctx, name, pid, subprocesses=subprocesses))
        yield


async def drain(
    ctx: Context, target: DrainTarget, tasks: int, *, poll: float = 0.5, profiled: bool = False
) -> dict[str, Any]:
    """One drain of ``tasks`` preloaded tasks; rate, CPU per task and timings."""
    await target.reset()
    await target.pause()
    account = CpuAccount(target.services())
    try:
        account.begin()
        began = time.time()
        ids = await target.preload(tasks)
        preload_seconds = time.time() - began
        account.end()
        preloading = dict(account.used)
        account.begin([name for name in account.services if name not in target.late])
        await target.resume(account)
        # Once resumed: a process started to resume (the consumer) has its pid now.
        with _profiles(ctx, target, profiled):
            times, seen = await _wait_final(
                ctx, target, ids, account, poll, timeout=60 + tasks / 10
            )
    except BaseException:
        with contextlib.suppress(Exception):
            await target.cleanup()
        raise
    first, last = min(times.values()), max(times.values())
    span = last - first
    rate = (target.count(tasks) - 1) / span if span > 0 else float("nan")
    result = {
        "tasks": tasks,
        "rate": rate,
        "span_seconds": span,
        "preload_seconds": preload_seconds,
        "preload_rate": tasks / preload_seconds if preload_seconds > 0 else float("nan"),
        # From the last final status recorded to the poll that found it.
        "seen_after_seconds": seen - last,
        "cpu_seconds": account.total,
        "cpu_ms_per_task": 1000 * account.total / tasks,
        "cpu_ms_per_task_by_service": {
            name: 1000 * used / tasks for name, used in account.used.items()
        },
        # The part of it used while the tasks were submitted (step 2).
        "cpu_ms_per_task_preloading": 1000 * sum(preloading.values()) / tasks,
        "cpu_ms_per_task_preloading_by_service": {
            name: 1000 * used / tasks for name, used in preloading.items()
        },
    }
    say(
        f"  {target.name}: {rate:7.1f} tasks/s, CPU {result['cpu_ms_per_task']:.2f} ms/task "
        f"(preload {preload_seconds:.1f} s)"
    )
    return result


async def _wait_final(
    ctx: Context,
    target: DrainTarget,
    ids: list[str],
    account: CpuAccount,
    poll: float,
    timeout: float,
) -> tuple[dict[str, float], float]:
    """Until every task reads final: their recorded final times, and when that was seen."""
    deadline = time.monotonic() + ctx.budget.cap(timeout)
    times: dict[str, float] = {}
    last = ids[-1]
    while True:
        if await target.is_final(last):
            account.end()
            seen = time.time()
            missing = [task_id for task_id in ids if task_id not in times]
            times.update(await target.final_times(missing))
            if len(times) >= len(ids):
                return times, seen
            account.begin()
        if time.monotonic() > deadline:
            account.end()
            left = len(ids) - len(times)
            raise TimeoutError(f"{target.name}: {left} of {len(ids)} tasks not final in time")
        await asyncio.sleep(poll)
