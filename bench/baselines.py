"""The HTTP baselines, served next to the system and measured with the same client.

- ``bare``: a FastAPI endpoint doing nothing (uvicorn, the api's server settings);
- ``publish``: the same endpoint publishing one confirmed persistent message per
  request over a long-lived aio-pika connection;
- ``naive``: the original system's style, a new pika connection per request.

The three servers run through the whole submit section, so that their runs
interleave with the system's (see :mod:`bench.rounds`).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from bench.baseline_app import NAIVE_QUEUE, PUBLISH_QUEUE
from bench.common import SUBMIT_BODY, Context, python_process, say, wait_http
from bench.loadgen import LoadGenerator, LoadResult
from bench.procstat import Service, rss_bytes
from bench.stats import median, summarize
from tasklab_devtools.procs import free_port

__all__ = ["MODES", "EndpointServer", "rate_stats"]

MODES = ("bare", "publish", "naive")


def rate_stats(runs: list[LoadResult]) -> dict[str, Any]:
    """The median rate of runs, every run's rate, latency and errors."""
    errors: dict[str, int] = {}
    for run in runs:
        for key, count in run.errors.items():
            errors[key] = errors.get(key, 0) + count
    latencies = [value for run in runs for value in run.latencies]
    return {
        "requests": runs[0].requests if runs else 0,
        "concurrency": runs[0].concurrency if runs else 0,
        "rate": median([run.rate for run in runs]),
        "latency": summarize(latencies).as_dict(),
        "client_cpu_ms_per_request": median([run.client_cpu_per_request_ms for run in runs]),
        "errors": errors,
    }


class EndpointServer:
    """The baseline app in one mode, on a free loopback port."""

    def __init__(self, ctx: Context, mode: str) -> None:
        self.ctx = ctx
        self.mode = mode
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/api/tasks"
        self.proc = python_process(
            ctx,
            f"baseline-{mode}",
            ["-m", "bench.baseline_app"],
            BENCH_MODE=mode,
            BENCH_PORT=str(self.port),
        )

    @property
    def requests(self) -> int:
        plan = self.ctx.plan
        return {
            "bare": plan.bare_requests,
            "publish": plan.publish_requests,
            "naive": plan.naive_requests,
        }[self.mode]

    def start(self) -> None:
        self.proc.start()
        wait_http(
            f"http://127.0.0.1:{self.port}/openapi.json",
            self.proc,
            timeout=self.ctx.budget.cap(60),
        )

    async def warm_up(self, load: LoadGenerator) -> None:
        await load.run(self.url, SUBMIT_BODY, requests=min(self.ctx.plan.warmup, self.requests))

    async def measure(self, load: LoadGenerator) -> dict[str, Any]:
        """One run of the mode's request count."""
        run = await load.run(self.url, SUBMIT_BODY, requests=self.requests)
        say(f"  {self.mode}: {run.rate:8.1f} req/s  {run.describe_errors()}")
        queue = {"publish": PUBLISH_QUEUE, "naive": NAIVE_QUEUE}.get(self.mode)
        if queue is not None:  # the next run starts with an empty queue again
            self.ctx.node.purge(queue)
        return rate_stats([run])

    def rss(self) -> int:
        return rss_bytes(Service(lambda: self.proc.pid))

    def stop(self) -> None:
        self.proc.terminate()
        for queue in (PUBLISH_QUEUE, NAIVE_QUEUE):
            self.ctx.node.api("DELETE", f"api/queues/%2F/{quote(queue, safe='')}")
