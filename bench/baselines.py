"""The baselines, measured on the same machine, broker and load generator as the system.

- ``bare``: a FastAPI endpoint doing nothing (uvicorn, the api's server settings);
- ``publish``: the same endpoint publishing one confirmed persistent message per
  request over a long-lived aio-pika connection;
- ``naive``: the original system's style, a new pika connection per request;
- raw Celery: the ``.delay()`` rate, a no-op worker's rate (``acks_late``,
  prefetch 1), the round trip ``.delay()`` → task ran, and ``.delay().get()``
  through ``rpc://``.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from bench import rawcelery
from bench.baseline_app import NAIVE_QUEUE, PUBLISH_QUEUE
from bench.common import SUBMIT_BODY, Context, python_process, say, wait_http
from bench.loadgen import LoadGenerator, LoadResult
from bench.procmem import group_source, total_rss
from bench.stats import median, summarize
from tasklab_devtools.procs import ManagedProcess, free_port

__all__ = ["endpoint", "rate_stats", "raw_celery"]


def rate_stats(runs: list[LoadResult]) -> dict[str, Any]:
    """The median rate of repeated runs, every run's rate, latency and errors."""
    errors: dict[str, int] = {}
    for run in runs:
        for key, count in run.errors.items():
            errors[key] = errors.get(key, 0) + count
    latencies = [value for run in runs for value in run.latencies]
    return {
        "requests": runs[0].requests if runs else 0,
        "concurrency": runs[0].concurrency if runs else 0,
        "rates": [round(run.rate, 1) for run in runs],
        "rate": median([run.rate for run in runs]),
        "latency": summarize(latencies).as_dict(),
        "client_cpu_ms_per_request": median([run.client_cpu_per_request_ms for run in runs]),
        "errors": errors,
    }


async def measure_rate(ctx: Context, url: str, requests: int) -> dict[str, Any]:
    """Warm up, then ``repeats`` runs of ``requests`` submissions to ``url``."""
    plan = ctx.plan
    async with LoadGenerator(plan.concurrency) as load:
        await load.run(url, SUBMIT_BODY, requests=min(plan.warmup, requests))
        runs = []
        for _ in range(plan.repeats):
            ctx.budget.cap(1.0)
            run = await load.run(url, SUBMIT_BODY, requests=requests)
            say(f"  {run.rate:8.1f} req/s  {run.describe_errors()}")
            runs.append(run)
    return rate_stats(runs)


def _delete_queue(ctx: Context, queue: str) -> None:
    ctx.node.api("DELETE", f"api/queues/%2F/{quote(queue, safe='')}")


async def endpoint(ctx: Context, mode: str, requests: int) -> dict[str, Any]:
    """Serve the baseline app in ``mode`` and measure its submission rate."""
    port = free_port()
    server = python_process(
        ctx, f"baseline-{mode}", ["-m", "bench.baseline_app"], BENCH_MODE=mode, BENCH_PORT=str(port)
    )
    server.start()
    try:
        base = f"http://127.0.0.1:{port}"
        wait_http(f"{base}/openapi.json", server, timeout=ctx.budget.cap(60))
        stats = await measure_rate(ctx, f"{base}/api/tasks", requests)
        stats["rss_bytes"] = total_rss(group_source(lambda: server.pid))
    finally:
        server.terminate()
        for queue in (PUBLISH_QUEUE, NAIVE_QUEUE):
            _delete_queue(ctx, queue)
    return stats


# --------------------------------------------------------------------- raw Celery


def _poll(ready: Callable[[], bool], worker: ManagedProcess, timeout: float, what: str) -> None:
    """Until ``ready()``; fails at once if the worker exits, or after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not ready():
        if not worker.running():
            raise RuntimeError(f"{worker.name} exited:\n{worker.log_tail()}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} within {timeout:g} s")
        time.sleep(0.005)


def _wait_worker(name: str, worker: ManagedProcess, timeout: float) -> None:
    _poll(
        lambda: bool(rawcelery.app.control.ping(destination=[name], timeout=1.0)),
        worker,
        timeout,
        f"{name} did not answer a ping",
    )


def _stamp_time(result: Any, timeout: float) -> float:
    return float(result.get(timeout=timeout))


def _file_stamp(path: Path, worker: ManagedProcess, timeout: float) -> float:
    """The time a ``stamp_file`` task wrote to ``path``, once it has run."""
    _poll(path.exists, worker, timeout, f"the stamp task for {path.name} did not run")
    return float(path.read_text(encoding="ascii"))


def raw_celery(ctx: Context) -> dict[str, Any]:
    """Raw Celery's rates and latencies, with the worker's concurrency of the stack."""
    plan = ctx.plan
    app = rawcelery.app
    app.conf.update(broker_url=ctx.node.amqp_url)
    name = f"bench-raw@{socket.gethostname()}"
    worker = python_process(
        ctx,
        "raw-celery-worker",
        [
            "celery",
            "-A",
            "bench.rawcelery",
            "worker",
            "--loglevel=info",
            f"--concurrency={plan.worker_concurrency}",
            "-n",
            "bench-raw@%h",
            "-Q",
            rawcelery.RAW_QUEUE,
        ],
        BENCH_RMQ_URL=ctx.node.amqp_url,
    )
    worker.start()
    try:
        _wait_worker(name, worker, ctx.budget.cap(60))
        for _ in range(20):  # warm up: connections, pool processes, reply queue
            _stamp_time(rawcelery.stamp.delay(), 10)

        round_trips: list[float] = []
        gets: list[float] = []
        for _ in range(plan.latency_samples):
            sent = time.time()
            ran = _stamp_time(rawcelery.stamp.delay(), 10)
            gets.append(time.time() - sent)
            round_trips.append(ran - sent)

        delay_rates: list[float] = []
        worker_rates: list[float] = []
        for _ in range(plan.repeats):
            ctx.budget.cap(1.0)
            # The worker stops consuming; the queue fills with .delay() calls; then
            # the worker drains it. Its rate: tasks between the first and last stamp.
            app.control.cancel_consumer(rawcelery.RAW_QUEUE, destination=[name], reply=True)
            first, last = (ctx.work / f"raw-{len(delay_rates)}-{end}" for end in ("first", "last"))
            rawcelery.stamp_file.delay(str(first))
            began = time.perf_counter()
            for _ in range(plan.raw_tasks):
                rawcelery.noop.delay()
            delay_rates.append(plan.raw_tasks / (time.perf_counter() - began))
            rawcelery.stamp_file.delay(str(last))
            app.control.add_consumer(rawcelery.RAW_QUEUE, destination=[name], reply=True)
            started = _file_stamp(first, worker, ctx.budget.cap(60))
            finished = _file_stamp(last, worker, ctx.budget.cap(120))
            worker_rates.append((plan.raw_tasks + 1) / (finished - started))
            say(f"  .delay() {delay_rates[-1]:7.1f}/s   worker {worker_rates[-1]:7.1f} tasks/s")
    finally:
        worker.terminate()
        _delete_queue(ctx, rawcelery.RAW_QUEUE)
    return {
        "concurrency": plan.worker_concurrency,
        "tasks": plan.raw_tasks,
        "delay_rates": [round(rate, 1) for rate in delay_rates],
        "delay_rate": median(delay_rates),
        "worker_rates": [round(rate, 1) for rate in worker_rates],
        "worker_rate": median(worker_rates),
        "round_trip": summarize(round_trips).as_dict(),
        "get": summarize(gets).as_dict(),
    }
