"""The system's rate measurements: submissions, the drain, and the live load.

- submit rate: ``POST /api/tasks`` per second from the load generator while the
  method's workers are paused (the broker only stores the messages, as for the
  confirmed-publish baseline); the queue is purged afterwards;
- the drain (:class:`SystemDrain`, see :mod:`bench.drain`): N tasks submitted while
  the workers are paused, then drained; final statuses read from the api;
- the live load: tasks submitted by the load generator while the workers run and
  the live stream is followed, with signed status reports for reserved tasks sent
  meanwhile: the callback → live stream latency under load.
"""

from __future__ import annotations

import time
from typing import Any

import httpx

from bench.baselines import rate_stats
from bench.common import Context, say
from bench.drain import DrainTarget
from bench.latency import CallbackProbe
from bench.loadgen import LoadGenerator
from bench.procstat import CpuAccount, Service
from bench.stack import QUEUE_OF, SystemStack, epoch
from bench.stats import summarize

__all__ = ["SystemDrain", "live_load", "submit_rate"]


async def submit_rate(
    ctx: Context, system: SystemStack, load: LoadGenerator, method: str
) -> dict[str, Any]:
    """One run of ``submit_requests`` submissions with the method's workers paused."""
    await system.pause(method)
    run = await load.run(
        system.submit_url, {"method": method, "duration": 0}, requests=ctx.plan.submit_requests
    )
    await system.purge(QUEUE_OF[method])
    say(f"  system {method}: {run.rate:8.1f} req/s  {run.describe_errors()}")
    return rate_stats([run])


class SystemDrain(DrainTarget):
    """The system drained through one method (``celery`` or ``rabbitmq``)."""

    where = "the api (finished_at)"

    def __init__(self, ctx: Context, system: SystemStack, load: LoadGenerator, method: str) -> None:
        self.ctx = ctx
        self.system = system
        self.load = load
        self.method = method
        self.name = f"system-{method}"
        self.label = f"tasklab, {method}"
        # The consumer is started again to resume: counted once it consumes.
        self.late = frozenset({"consumer"}) if method == "rabbitmq" else frozenset()
        self._client = httpx.AsyncClient(trust_env=False, timeout=30)
        self._since = 0.0

    async def close(self) -> None:
        await self._client.aclose()

    def services(self) -> dict[str, Service]:
        return self.system.services()

    async def pause(self) -> None:
        await self.system.pause(self.method)

    async def preload(self, tasks: int) -> list[str]:
        self._since = time.time()
        submitted = await self.system.submit(self.load, self.method, tasks)
        return [task_id for _, task_id in submitted]

    async def resume(self, account: CpuAccount) -> None:
        await self.system.resume(self.method)
        if self.late:
            account.begin(self.late)

    async def is_final(self, task_id: str) -> bool:
        response = await self._client.get(f"{self.system.submit_url}/{task_id}")
        return response.status_code == 200 and response.json().get("status") == "DONE"

    async def final_times(self, ids: list[str]) -> dict[str, float]:
        return await self.system.done_times(self._client, ids, self._since - 1)

    async def cleanup(self) -> None:
        await self.system.purge(QUEUE_OF[self.method])
        await self.system.resume(self.method)

    def profiled(self) -> list[tuple[str, int | None, bool]]:
        worker = "celery-worker" if self.method == "celery" else "consumer"
        return [
            (f"api-drain-{self.method}", self.system.pid("api"), False),
            (f"{worker}-drain-{self.method}", self.system.pid(worker), True),
        ]


async def live_load(
    ctx: Context, system: SystemStack, load: LoadGenerator, reserved: list[str]
) -> dict[str, Any]:
    """``live_tasks`` Celery tasks submitted while the workers run, the live stream
    followed; meanwhile signed reports for the ``reserved`` tasks, one every 0.1 s:
    the callback → live stream latency under load."""
    tasks = ctx.plan.live_tasks
    await system.resume("celery")
    async with system.following() as stream:
        probe = await CallbackProbe.start(system, reserved, gap=0.1)
        submitted = await system.submit(load, "celery", tasks)
        started = min(sent for sent, _ in submitted)
        done = await system.wait_done(
            stream, [task_id for _, task_id in submitted], 60 + tasks / 10
        )
        latencies, timeouts = await probe.result()
    finished = {task_id: epoch(task["finished_at"]) for task_id, task in done.items()}
    rate = len(finished) / (max(finished.values()) - started)
    p99 = summarize(latencies).p99
    say(f"  system live load: {rate:7.1f} tasks/s; callback → stream p99 {p99 * 1000:.0f} ms")
    return {
        "tasks": tasks,
        "rate": rate,
        "submit_to_done": summarize(
            [finished[task_id] - sent for sent, task_id in submitted]
        ).as_dict(),
        "callback_to_stream": summarize(latencies).as_dict(),
        "callback_timeouts": timeouts,
    }
