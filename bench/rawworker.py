"""Raw Celery: a no-op worker with our worker's settings and nothing else (no status
reports, no task store), measured as a figure beside the system.

- latency: the round trip ``.delay()`` → the task ran, and ``.delay().get()``
  through ``rpc://``;
- the drain (:class:`RawDrain`): N no-op tasks preloaded while the worker is not
  consuming, then drained; the rate is timed inside the worker by two stamp tasks
  (first and last in the queue) that write the time they ran to a file, so that it
  depends on no result reaching the client. Its CPU per task (worker and broker) is
  the floor of any status tracking on this machine.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import rawcelery
from bench.common import Context, python_process
from bench.drain import DrainTarget
from bench.procstat import CpuAccount, Service
from tasklab_devtools.procs import ManagedProcess

__all__ = ["RawDrain", "RawWorker"]


def _poll(ready: Callable[[], bool], worker: ManagedProcess, timeout: float, what: str) -> None:
    """Until ``ready()``; fails at once if the worker exits, or after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not ready():
        if not worker.running():
            raise RuntimeError(f"{worker.name} exited:\n{worker.log_tail()}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} within {timeout:g} s")
        time.sleep(0.005)


class RawWorker:
    """The raw Celery worker (concurrency of the stack's worker) on its own queue."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.name = f"bench-raw@{socket.gethostname()}"
        rawcelery.app.conf.update(broker_url=ctx.node.amqp_url)
        self.proc = python_process(
            ctx,
            "raw-celery-worker",
            [
                "celery",
                "-A",
                "bench.rawcelery",
                "worker",
                "--loglevel=info",
                f"--concurrency={ctx.plan.worker_concurrency}",
                "-n",
                "bench-raw@%h",
                "-Q",
                rawcelery.RAW_QUEUE,
            ],
            BENCH_RMQ_URL=ctx.node.amqp_url,
        )

    def start(self) -> None:
        self.proc.start()
        _poll(
            lambda: bool(rawcelery.app.control.ping(destination=[self.name], timeout=1.0)),
            self.proc,
            self.ctx.budget.cap(90),
            f"{self.name} did not answer a ping",
        )
        for _ in range(20):  # warm up: connections, pool processes, reply queue
            rawcelery.stamp.delay().get(timeout=10)

    def stop(self) -> None:
        self.proc.terminate()
        self.ctx.node.api("DELETE", f"api/queues/%2F/{rawcelery.RAW_QUEUE}")

    def latency(self, samples: int) -> dict[str, list[float]]:
        """``samples`` round trips (send → ran) and ``.get()`` durations, in seconds."""
        round_trips: list[float] = []
        gets: list[float] = []
        for _ in range(samples):
            sent = time.time()
            ran = float(rawcelery.stamp.delay().get(timeout=10))
            gets.append(time.time() - sent)
            round_trips.append(ran - sent)
        return {"round_trip": round_trips, "get": gets}

    def control(self, command: str) -> None:
        call = (
            rawcelery.app.control.cancel_consumer
            if command == "cancel"
            else rawcelery.app.control.add_consumer
        )
        if not call(rawcelery.RAW_QUEUE, destination=[self.name], reply=True):
            raise RuntimeError(f"{self.name} did not answer {command}_consumer")


class RawDrain(DrainTarget):
    """The raw worker drained: timed by the first and last stamp tasks."""

    name = "raw-worker"
    label = "raw Celery worker (no status tracking)"
    where = "stamp files written by the first and last task"

    def __init__(self, ctx: Context, worker: RawWorker, broker: Service) -> None:
        self.ctx = ctx
        self.worker = worker
        self.broker = broker
        self._runs = 0
        self._paths: dict[str, Path] = {}
        #: ``.delay()`` per second while preloading (one thread, publisher confirms).
        self.delay_rates: list[float] = []

    def services(self) -> dict[str, Service]:
        return {"celery-worker": Service(lambda: self.worker.proc.pid), "rabbitmq": self.broker}

    async def pause(self) -> None:
        await asyncio.to_thread(self.worker.control, "cancel")

    async def preload(self, tasks: int) -> list[str]:
        return await asyncio.to_thread(self._preload, tasks)

    def _preload(self, tasks: int) -> list[str]:
        self._runs += 1
        self._paths = {end: self.ctx.work / f"raw-{self._runs}-{end}" for end in ("first", "last")}
        rawcelery.stamp_file.delay(str(self._paths["first"]))
        began = time.perf_counter()
        for _ in range(tasks):
            rawcelery.noop.delay()
        self.delay_rates.append(tasks / (time.perf_counter() - began))
        rawcelery.stamp_file.delay(str(self._paths["last"]))
        return ["first", "last"]

    async def resume(self, account: CpuAccount) -> None:
        await asyncio.to_thread(self.worker.control, "add")

    async def is_final(self, task_id: str) -> bool:
        if not self.worker.proc.running():
            raise RuntimeError(f"the raw worker exited:\n{self.worker.proc.log_tail()}")
        return self._paths[task_id].exists()

    async def final_times(self, ids: list[str]) -> dict[str, float]:
        return {
            key: float(self._paths[key].read_text(encoding="ascii"))
            for key in ids
            if self._paths[key].exists()
        }

    def count(self, tasks: int) -> int:
        return tasks + 2  # the two stamp tasks around the no-ops

    async def cleanup(self) -> None:
        await asyncio.to_thread(self.worker.control, "add")

    def figures(self) -> dict[str, Any]:
        return {"delay_rates": [round(rate, 1) for rate in self.delay_rates]}
