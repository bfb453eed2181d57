"""The run's sections, in order; each interleaves the variants it compares.

1. **submit**: the three baseline endpoints and the system's submission per method
   (its workers paused), and the callback → live stream latency at rest;
2. **latency**: raw Celery's round trip and ``.get()``, the system's submit → DONE per
   method and its sync latency, one task at a time;
3. **drain**: N preloaded no-op tasks through the system (per method), each peer
   and the raw worker, rate and CPU per task (see :mod:`bench.drain`); and the live
   load, with the callback → live stream latency under load;
4. **scaling**: 1-s tasks at 1 ... 32 worker slots.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench.baselines import MODES, EndpointServer
from bench.common import Context, say
from bench.drain import DrainTarget, drain
from bench.latency import callback_latency, submit_to_done, sync_latency
from bench.loadgen import LoadGenerator
from bench.peers import CeleryPeer, FlowerPeer, PostgresPeer, RedisPeer
from bench.procstat import CpuAccount, MemorySampler, Service
from bench.profiling import profile
from bench.rawworker import RawDrain, RawWorker
from bench.rounds import Variant, aggregate, interleave
from bench.scaling import scaling
from bench.stack import METHODS, QUEUE_OF, SystemStack
from bench.stats import summarize
from bench.system import SystemDrain, live_load, submit_rate
from tasklab_devtools.pg import PgServer, ensure_postgresql
from tasklab_devtools.redisserver import RedisServer, ensure_redis_server

__all__ = ["SECTIONS", "Run"]

SECTIONS = ("submit", "latency", "drain", "scaling")

#: Figures of a drain summarised over the rounds.
DRAIN_FIGURES = (
    "rate",
    "cpu_ms_per_task",
    "cpu_ms_per_task_preloading",
    "preload_rate",
    "seen_after_seconds",
)


class Run:
    """One benchmark run: the sections, writing into :attr:`results` as they go."""

    def __init__(
        self, ctx: Context, results: dict[str, Any], sections: tuple[str, ...] = SECTIONS
    ) -> None:
        self.ctx = ctx
        self.sections = sections
        self.plan = ctx.plan
        self.results = results
        self.base: dict[str, Any] = results.setdefault("baselines", {})
        self.sys: dict[str, Any] = results.setdefault("system", {})
        self.peers: dict[str, Any] = results.setdefault("peers", {})
        self.system = SystemStack(ctx)
        self.reserved: list[str] = []

    async def section(self, name: str, body: Callable[[], Awaitable[None]]) -> None:
        """Run a section; a failure is recorded and the run goes on with the next one."""
        try:
            self.ctx.budget.cap(1.0)
            with self.ctx.timer(name):
                await body()
        except Exception as exc:  # BudgetExceeded included
            say(f"{name} failed: {type(exc).__name__}: {exc}")
            self.ctx.error(name, exc)

    async def run(self) -> None:
        ctx, plan, wanted = self.ctx, self.plan, self.sections
        with ctx.timer("start the stack"):
            await self.system.start()
        try:
            await asyncio.sleep(2)
            self.sys["memory"] = {"at_rest": self.system.rss()}
            async with LoadGenerator(self.plan.concurrency) as load:
                self.load = load
                # Targets of the callback measurements, at rest and under load.
                count = (plan.fast_rounds + plan.rounds) * plan.callback_samples
                self.reserved = await self.system.reserve(load, count)
                if "submit" in wanted:
                    await self.section("submit section", self.submit_section)
                await self.system.resume(*METHODS)
                raw = RawWorker(ctx)
                try:
                    if "latency" in wanted:
                        await self.section("latency section", lambda: self.latency_section(raw))
                    if "drain" in wanted:
                        await self.section("drain section", lambda: self.drain_section(raw))
                finally:
                    await asyncio.to_thread(raw.stop)
                if "scaling" in wanted:
                    await self.section("scaling", self.scaling_section)
        finally:
            with ctx.timer("stop the stack"):
                await self.system.stop()

    # ----------------------------------------------------------------- 1. submit

    async def submit_section(self) -> None:
        ctx, plan, system, load = self.ctx, self.plan, self.system, self.load
        servers = {mode: EndpointServer(ctx, mode) for mode in MODES}
        try:
            await asyncio.gather(*(asyncio.to_thread(s.start) for s in servers.values()))
            await system.pause(*METHODS)
            per_round = plan.callback_samples
            for server in servers.values():
                await server.warm_up(load)
            for method in METHODS:
                await system.submit(load, method, min(plan.warmup, plan.submit_requests))
                await system.purge(QUEUE_OF[method])

            async def submit(method: str, index: int) -> dict[str, Any]:
                pid = system.pid("api") if index == 0 else None
                with profile(ctx, f"api-submit-{method}", pid):
                    return await submit_rate(ctx, system, load, method)

            async def at_rest(index: int) -> dict[str, Any]:
                tasks = self.reserved[index * per_round : (index + 1) * per_round]
                async with system.following() as stream:
                    latencies, timeouts = await callback_latency(
                        system.cfg.api_callback_url,
                        system.cfg.callback_secret,
                        stream,
                        tasks,
                        gap=0.02,
                    )
                return {**summarize(latencies).as_dict(), "timeouts": timeouts}

            def endpoint(mode: str) -> Variant:
                return Variant(mode, lambda index: servers[mode].measure(load))

            def system_submit(method: str) -> Variant:
                return Variant(f"system-{method}", lambda index: submit(method, index))

            variants = [
                *(endpoint(mode) for mode in MODES),
                *(system_submit(method) for method in METHODS),
                Variant("callback-at-rest", at_rest),
            ]
            runs = await interleave(ctx, "submit", variants, plan.fast_rounds)
            for mode in MODES:
                self.base[mode] = {
                    "runs": runs[mode],
                    **aggregate(
                        runs[mode],
                        "rate",
                        "latency.p50",
                        "latency.p99",
                        "client_cpu_ms_per_request",
                    ),
                }
            self.base["bare"]["rss_bytes"] = servers["bare"].rss()
            self.sys["submit"] = {
                method: {
                    "runs": runs[f"system-{method}"],
                    **aggregate(runs[f"system-{method}"], "rate", "latency.p50", "latency.p99"),
                }
                for method in METHODS
            }
            self.sys["callback_at_rest"] = {
                "runs": runs["callback-at-rest"],
                **aggregate(runs["callback-at-rest"], "p50", "p99", "timeouts"),
            }
        finally:
            for server in servers.values():
                await asyncio.to_thread(server.stop)
            await system.purge(*QUEUE_OF.values())

    # ----------------------------------------------------------------- 2. latency

    async def _start_raw(self, raw: RawWorker) -> None:
        if not raw.proc.running():
            await asyncio.to_thread(raw.start)

    async def latency_section(self, raw: RawWorker) -> None:
        ctx, plan, system = self.ctx, self.plan, self.system
        await self._start_raw(raw)
        samples = plan.latency_samples
        async with system.following() as stream:

            async def raw_latency(index: int) -> dict[str, Any]:
                latency = await asyncio.to_thread(raw.latency, samples)
                return {key: summarize(values).as_dict() for key, values in latency.items()}

            def done(method: str) -> Variant:
                return Variant(
                    method, lambda index: submit_to_done(system, stream, method, samples)
                )

            variants = [
                Variant("raw", raw_latency),
                *(done(method) for method in METHODS),
                Variant("sync", lambda i: sync_latency(system, samples)),
            ]
            runs = await interleave(ctx, "latency", variants, plan.fast_rounds)
        self.base["raw_celery"] = {
            "concurrency": plan.worker_concurrency,
            "latency_runs": runs["raw"],
            **aggregate(runs["raw"], "round_trip.p50", "round_trip.p99", "get.p50", "get.p99"),
        }
        self.sys["latency"] = {
            **{
                method: {
                    "runs": runs[method],
                    **aggregate(runs[method], "done.p50", "done.p99", "visible.p50", "visible.p99"),
                }
                for method in METHODS
            },
            "sync": {"runs": runs["sync"], **aggregate(runs["sync"], "p50", "p99")},
        }

    # ----------------------------------------------------------------- 3. drain

    async def drain_section(self, raw: RawWorker) -> None:
        ctx, system, load = self.ctx, self.system, self.load
        await self._start_raw(raw)
        await asyncio.to_thread(ensure_postgresql)
        await asyncio.to_thread(ensure_redis_server)
        broker = system.broker_service()
        with contextlib.ExitStack() as stack:
            # The PostgreSQL server runs as its own user when we are root: a folder it
            # can reach, not inside our private work folder.
            pg = PgServer(Path(tempfile.mkdtemp(prefix="tasklab-bench-pg-")))
            stack.callback(pg.stop)
            await asyncio.to_thread(pg.start)
            redis_server = RedisServer(ctx.work / "redis")
            stack.callback(redis_server.stop)
            await asyncio.to_thread(redis_server.start)
            vhosts = [stack.enter_context(ctx.node.vhost(f"bench-peer-{i}")) for i in range(3)]
            peers: list[CeleryPeer] = [
                PostgresPeer(ctx, vhosts[0], broker, pg),
                RedisPeer(ctx, vhosts[1], broker, redis_server),
                FlowerPeer(ctx, vhosts[2], broker),
            ]
            for peer in peers:
                stack.callback(peer.stop)
            await asyncio.gather(*(asyncio.to_thread(peer.start) for peer in peers))
            targets: list[DrainTarget] = [
                *(SystemDrain(ctx, system, load, method) for method in METHODS),
                *peers,
                RawDrain(ctx, raw, broker),
            ]
            try:
                await self._drains(targets)
            finally:
                for target in targets:
                    close = getattr(target, "close", None)
                    if close is not None:
                        await close()

    async def _drains(self, targets: list[DrainTarget]) -> None:
        ctx, plan, system, load = self.ctx, self.plan, self.system, self.load
        with self.ctx.timer("drain: warm-up"):
            for target in targets:
                await drain(ctx, target, plan.drain_warmup)
        self.results["idle_cpu"] = await _idle_cpu(targets)
        per_round = plan.callback_samples
        under_load = self.reserved[plan.fast_rounds * per_round :]
        profiled = ctx.profile_dir is not None

        def drained(target: DrainTarget) -> Variant:
            return Variant(
                target.name,
                lambda i: drain(ctx, target, plan.drain_tasks, profiled=profiled and i == 0),
            )

        variants = [
            *(drained(target) for target in targets),
            Variant(
                "live",
                lambda i: live_load(
                    ctx, system, load, under_load[i * per_round : (i + 1) * per_round]
                ),
            ),
        ]
        memory = {
            **system.services(),
            **{
                f"{target.name}/{name}": service
                for target in targets
                if not isinstance(target, SystemDrain)
                for name, service in target.services().items()
                if name != "rabbitmq"
            },
        }
        with MemorySampler(memory) as sampler:
            runs = await interleave(ctx, "drain", variants, plan.rounds)
        self.sys.setdefault("memory", {})["under_load"] = sampler.peak
        for target in targets:
            entry = {
                "label": target.label,
                "where": target.where,
                "runs": runs[target.name],
                **aggregate(runs[target.name], *DRAIN_FIGURES),
                "cpu_ms_per_task_by_service": _by_service(runs[target.name]),
            }
            figures = getattr(target, "figures", None)
            if figures is not None:
                entry.update(figures())
            if isinstance(target, SystemDrain):
                self.sys.setdefault("drain", {})[target.method] = entry
            elif isinstance(target, RawDrain):
                self.base.setdefault("raw_celery", {})["drain"] = entry
            else:
                self.peers[target.name] = entry
        self.sys["live"] = {
            "runs": runs["live"],
            **aggregate(
                runs["live"],
                "rate",
                "submit_to_done.p50",
                "callback_to_stream.p50",
                "callback_to_stream.p99",
                "callback_timeouts",
            ),
        }

    # ----------------------------------------------------------------- 4. scaling

    async def scaling_section(self) -> None:
        self.sys["scaling"] = []
        await scaling(self.ctx, self.system, self.load, self.sys["scaling"])


def _by_service(runs: list[dict[str, Any]]) -> dict[str, float]:
    """Median CPU ms per task of each service over the runs."""
    names = {name for run in runs for name in run.get("cpu_ms_per_task_by_service", {})}
    return {
        name: aggregate(runs, f"cpu_ms_per_task_by_service.{name}")[
            f"cpu_ms_per_task_by_service.{name}"
        ]["median"]
        for name in sorted(names)
    }


async def _idle_cpu(targets: list[DrainTarget], seconds: float = 3.0) -> dict[str, float]:
    """CPU of every process at rest, in % of one core: what a drain's window counts
    besides the tasks' own work (the longer the window, the more)."""
    services: dict[str, Service] = {}
    for target in targets:
        for name, service in target.services().items():
            key = (
                name
                if name == "rabbitmq" or isinstance(target, SystemDrain)
                else (f"{target.name}/{name}")
            )
            services[key] = service
    account = CpuAccount(services)
    account.begin()
    began = time.monotonic()
    await asyncio.sleep(seconds)
    account.end()
    elapsed = time.monotonic() - began
    return {name: round(100 * used / elapsed, 2) for name, used in account.used.items()}
