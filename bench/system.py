"""The system: the real local stack (api, Celery worker, consumer) on the private broker.

The services run with the commands of their images and the production reliability
settings (publisher confirms, persistent messages, durable queues, ``acks_late``,
``reject_on_worker_lost``); only the per-client submission limit is lifted
(``SUBMIT_RATE=0``), since all the load comes from one address. The task store is
SQLite, as for a single api process.

Phases, in order:

1. memory at rest (every service started and idle);
2. workers paused (the Celery worker stops consuming, the consumer is stopped);
   tasks reserved for the callback measurements are created and their messages
   purged, so no worker ever runs them; callback → live stream latency at rest;
3. submission rate per method (the broker only stores the messages, as for the
   confirmed-publish baseline), then the queues are purged and the workers resume;
4. submit → DONE latency per method and sync latency, one task at a time;
5. pipeline rate per method: a fixed number of 0-s tasks submitted by the load
   generator, timed from the first submission to the last DONE; during the Celery
   run, callbacks for the reserved tasks measure the live stream under load, and
   memory is sampled;
6. scaling: the Celery worker restarted with 1, 2, 4, ... slots (``--concurrency``),
   ``rounds`` 1-s tasks per slot each time.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import socket
import time
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import aio_pika
import httpx
from aio_pika.abc import AbstractChannel

from bench import rawcelery
from bench.baselines import rate_stats
from bench.common import Context, profile, say
from bench.events import EventStream
from bench.loadgen import JSON_HEADERS, LoadGenerator, LoadResult
from bench.procmem import MemorySampler, PidSource, group_source, total_rss, tree_source
from bench.stats import median, summarize
from tasklab_common.messages import StatusUpdate
from tasklab_common.models import TaskStatus
from tasklab_common.queues import CELERY_QUEUE, DIRECT_QUEUE
from tasklab_common.signing import sign_headers
from tasklab_devtools.procs import free_port
from tasklab_devtools.stack import LocalStack, StackConfig, celery_process

__all__ = ["System"]

#: Node name of the stack's Celery worker (started without ``-n``).
SYSTEM_WORKER = f"celery@{socket.gethostname()}"
#: How long one task may take to reach DONE in a latency measurement.
TASK_TIMEOUT = 15.0


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


class System:
    """Runs the system's phases; :meth:`run` returns the measurements."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.plan = ctx.plan
        rawcelery.app.conf.update(broker_url=ctx.node.amqp_url)  # for control commands
        self.cfg = StackConfig(
            rmq_url=ctx.node.amqp_url,
            database_url=f"sqlite:///{ctx.work}/tasklab.db",
            callback_secret=secrets.token_urlsafe(32),
            api_port=free_port(),
            celery_concurrency=self.plan.worker_concurrency,
            consumer_concurrency=self.plan.worker_concurrency,
            log_dir=ctx.logs,
            rmq_management_url=ctx.node.management_url,
            extra_env={"SUBMIT_RATE": "0"},
            cwd=ctx.work,
        )
        self.stack = LocalStack(self.cfg)
        self.submit_url = f"{self.cfg.api_base_url}/api/tasks"
        self.results: dict[str, Any] = {}
        self._stream: EventStream | None = None
        self._channel: AbstractChannel | None = None

    # ----------------------------------------------------------------- helpers

    @property
    def stream(self) -> EventStream:
        assert self._stream is not None, "the live stream is not followed"
        return self._stream

    @property
    def channel(self) -> AbstractChannel:
        assert self._channel is not None
        return self._channel

    def _pid(self, name: str) -> int | None:
        proc = self.stack.processes.get(name)
        return proc.pid if proc is not None and proc.running() else None

    def _rabbit_pid(self) -> int | None:
        try:
            return int((self.ctx.node.base_dir / "rabbitmq.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def services(self) -> dict[str, PidSource]:
        """Each service's processes, for the memory figures."""
        return {
            "api": group_source(lambda: self._pid("api")),
            "celery-worker": group_source(lambda: self._pid("celery-worker")),
            "consumer": group_source(lambda: self._pid("consumer")),
            "rabbitmq": tree_source(self._rabbit_pid),
        }

    def _rss(self) -> dict[str, int]:
        return {name: total_rss(source) for name, source in self.services().items()}

    @contextlib.asynccontextmanager
    async def _following(self) -> AsyncIterator[EventStream]:
        self._stream = EventStream(self.cfg.api_base_url)
        try:
            await self._stream.start()
            yield self._stream
        finally:
            await self._stream.close()
            self._stream = None

    async def _consumers(self, queue: str) -> int:
        declared = await self.channel.declare_queue(queue, durable=True, passive=True)
        result = declared.declaration_result
        return int(result.consumer_count or 0)

    async def _wait_consumers(self, queue: str, present: bool, timeout: float = 60) -> None:
        deadline = time.monotonic() + self.ctx.budget.cap(timeout)
        while (await self._consumers(queue) > 0) != present:
            if time.monotonic() > deadline:
                raise TimeoutError(f"queue {queue}: consumers {'not ' * present}there in time")
            await asyncio.sleep(0.1)

    async def _purge(self, *queues: str) -> None:
        for queue in queues:
            declared = await self.channel.declare_queue(queue, durable=True, passive=True)
            await declared.purge()

    async def _control(self, command: str, queue: str) -> None:
        control = rawcelery.app.control
        call = control.cancel_consumer if command == "cancel" else control.add_consumer
        replies = await asyncio.to_thread(call, queue, destination=[SYSTEM_WORKER], reply=True)
        if not replies:
            raise RuntimeError(f"{SYSTEM_WORKER} did not answer {command}_consumer")

    async def _pause_workers(self) -> None:
        await self._control("cancel", CELERY_QUEUE)
        await asyncio.to_thread(self.stack.processes["consumer"].terminate)
        await self._wait_consumers(CELERY_QUEUE, present=False)
        await self._wait_consumers(DIRECT_QUEUE, present=False)

    async def _resume_workers(self) -> None:
        await self._control("add", CELERY_QUEUE)
        self.stack.processes["consumer"].start()
        await self._wait_consumers(CELERY_QUEUE, present=True)
        await self._wait_consumers(DIRECT_QUEUE, present=True)

    async def _wait_done(self, ids: list[str], timeout: float) -> dict[str, dict[str, Any]]:
        """Wait until every task is DONE; the DONE task (the api's JSON) by id.

        The live stream says when; should it miss some (a subscriber too slow is
        dropped and reconnects), the tasks still missing are read from the api.
        """
        stream = self.stream
        deadline = time.monotonic() + self.ctx.budget.cap(timeout)
        finished: dict[str, dict[str, Any]] = {}
        pending = list(ids)
        last_progress = time.monotonic()
        async with httpx.AsyncClient(trust_env=False, timeout=10) as client:
            while pending:
                still = []
                for task_id in pending:
                    seen = stream.seen.get((task_id, "DONE"))
                    if seen is None:
                        still.append(task_id)
                    else:
                        finished[task_id] = seen.task
                if len(still) < len(pending):
                    last_progress = time.monotonic()
                pending = still
                if not pending:
                    break
                now = time.monotonic()
                if now - last_progress > 2.0 or now > deadline:
                    for task_id in pending[:200]:
                        task = (await client.get(f"{self.submit_url}/{task_id}")).json()
                        if task.get("status") == "DONE":
                            finished[task_id] = task
                    pending = [task_id for task_id in pending if task_id not in finished]
                    last_progress = now
                    if pending and now > deadline:
                        raise TimeoutError(f"{len(pending)} of {len(ids)} tasks not DONE in time")
                await asyncio.sleep(0.05)
        return finished

    # ----------------------------------------------------------------- phases

    async def _create_reserved(self, load: LoadGenerator, count: int) -> list[str]:
        """Tasks no worker will run (their messages are purged): callback targets."""
        run = await load.run(
            self.submit_url, {"method": "celery", "duration": 0}, requests=count, keep_answers=True
        )
        if run.errors:
            raise RuntimeError(f"creating reserved tasks failed: {run.describe_errors()}")
        await self._purge(CELERY_QUEUE)
        return [str(answer["id"]) for _, answer in run.answers]

    async def _callback_latency(self, task_ids: list[str], gap: float) -> tuple[list[float], int]:
        """Signed IN_PROGRESS then DONE reports for each task, as a worker sends them;
        seconds from sending each report to its event on the live stream."""
        latencies: list[float] = []
        timeouts = 0
        secret = self.cfg.callback_secret
        async with httpx.AsyncClient(trust_env=False, timeout=10) as client:
            for task_id in task_ids:
                for status, result in (
                    (TaskStatus.IN_PROGRESS, None),
                    (TaskStatus.DONE, {"status": "success"}),
                ):
                    update = StatusUpdate(
                        task_id=task_id,
                        status=status,
                        attempt=1,
                        worker="bench-callback",
                        result=result,
                    )
                    body = update.model_dump_json().encode()
                    headers = {**JSON_HEADERS, **sign_headers(secret, body)}
                    sent = time.time()
                    response = await client.post(
                        self.cfg.api_callback_url, content=body, headers=headers
                    )
                    if response.status_code != 200:
                        raise RuntimeError(
                            f"callback answered {response.status_code}: {response.text[:200]}"
                        )
                    try:
                        seen = await self.stream.wait(task_id, status.value, TASK_TIMEOUT)
                    except TimeoutError:
                        timeouts += 1
                        continue
                    latencies.append(seen.arrived - sent)
                await asyncio.sleep(gap)
        return latencies, timeouts

    async def _submit_rate(self, load: LoadGenerator, method: str) -> dict[str, Any]:
        body = {"method": method, "duration": 0}
        requests = self.plan.submit_requests
        await load.run(self.submit_url, body, requests=min(self.plan.warmup, requests))
        runs: list[LoadResult] = []
        with profile(self.ctx, f"api-submit-{method}", self._pid("api")):
            for _ in range(self.plan.repeats):
                self.ctx.budget.cap(1.0)
                run = await load.run(self.submit_url, body, requests=requests)
                say(f"  {method}: {run.rate:8.1f} req/s  {run.describe_errors()}")
                runs.append(run)
        return rate_stats(runs)

    async def _submit_to_done(self, method: str) -> dict[str, Any]:
        """One task at a time: send → DONE (the store's finished_at) and → seen on the stream."""
        done: list[float] = []
        visible: list[float] = []
        body = {"method": method, "duration": 0}
        async with httpx.AsyncClient(trust_env=False, timeout=TASK_TIMEOUT) as client:
            for index in range(10 + self.plan.latency_samples):
                sent = time.time()
                response = await client.post(self.submit_url, json=body)
                if response.status_code != 202:
                    raise RuntimeError(f"submit answered {response.status_code}")
                task_id = str(response.json()["id"])
                seen = await self.stream.wait(task_id, "DONE", TASK_TIMEOUT)
                if index >= 10:  # the first ten warm up
                    done.append(_epoch(seen.task["finished_at"]) - sent)
                    visible.append(seen.arrived - sent)
        return {"done": summarize(done).as_dict(), "visible": summarize(visible).as_dict()}

    async def _sync_latency(self) -> dict[str, Any]:
        latencies: list[float] = []
        body = {"method": "sync", "duration": 0}
        async with httpx.AsyncClient(trust_env=False, timeout=TASK_TIMEOUT + 30) as client:
            for index in range(5 + self.plan.latency_samples):
                began = time.perf_counter()
                response = await client.post(self.submit_url, json=body)
                elapsed = time.perf_counter() - began
                if response.status_code != 200 or response.json().get("status") != "DONE":
                    raise RuntimeError(f"sync answered {response.status_code}: {response.text}")
                if index >= 5:
                    latencies.append(elapsed)
        return summarize(latencies).as_dict()

    async def _pipeline(self, load: LoadGenerator, method: str) -> dict[str, Any]:
        """0-s tasks from the first submission to the last DONE, ``pipeline_repeats`` times."""
        tasks = self.plan.pipeline_tasks
        rates: list[float] = []
        submit_rates: list[float] = []
        e2e: list[float] = []
        for _ in range(self.plan.pipeline_repeats):
            self.ctx.budget.cap(1.0)
            run = await load.run(
                self.submit_url,
                {"method": method, "duration": 0},
                requests=tasks,
                keep_answers=True,
            )
            if run.errors:
                say(f"  {method}: submission errors: {run.describe_errors()}")
            ids = {str(answer["id"]): sent for sent, answer in run.answers}
            done = await self._wait_done(list(ids), timeout=60 + tasks / 20)
            finished = {task_id: _epoch(task["finished_at"]) for task_id, task in done.items()}
            elapsed = max(finished.values()) - run.started_at
            rates.append(len(finished) / elapsed)
            submit_rates.append(run.rate)
            e2e += [finished[task_id] - sent for task_id, sent in ids.items()]
            say(f"  {method}: {rates[-1]:7.1f} tasks/s (submissions {run.rate:.0f}/s)")
        return {
            "tasks": tasks,
            "concurrency": load.concurrency,
            "rates": [round(rate, 1) for rate in rates],
            "rate": median(rates),
            "submit_rate_while_running": median(submit_rates),
            "submit_to_done": summarize(e2e).as_dict(),
        }

    async def _restart_worker(self, slots: int) -> None:
        proc = self.stack.processes["celery-worker"]
        await asyncio.to_thread(proc.terminate)
        await self._wait_consumers(CELERY_QUEUE, present=False)
        proc.argv = celery_process(self.cfg, concurrency=slots).argv
        proc.start()
        await self._wait_consumers(CELERY_QUEUE, present=True)

    async def _scaling(self, load: LoadGenerator) -> list[dict[str, Any]]:
        rounds = self.plan.scaling_rounds
        out: list[dict[str, Any]] = []
        for slots in self.plan.scaling_slots:
            self.ctx.budget.cap(rounds + 10.0)
            await self._restart_worker(slots)
            # Warm up: one short task per slot, so that every pool process has started
            # its first task (imports, its HTTP client) before the measured run.
            warm = await load.run(
                self.submit_url,
                {"method": "celery", "duration": 0.2},
                requests=slots,
                keep_answers=True,
            )
            await self._wait_done([str(answer["id"]) for _, answer in warm.answers], 30)
            tasks = slots * rounds
            run = await load.run(
                self.submit_url,
                {"method": "celery", "duration": 1},
                requests=tasks,
                keep_answers=True,
            )
            ids = [str(answer["id"]) for _, answer in run.answers]
            done = await self._wait_done(ids, timeout=rounds * 3 + 30)
            elapsed = max(_epoch(task["finished_at"]) for task in done.values()) - run.started_at
            rate = len(done) / elapsed
            efficiency = rate / slots  # each slot can do one 1-s task per second
            rss = total_rss(self.services()["celery-worker"])
            # Where the time went: each task's created → started and started → finished.
            waits = [float(task.get("queue_wait_seconds") or 0) for task in done.values()]
            runs = [float(task.get("run_seconds") or 0) for task in done.values()]
            out.append(
                {
                    "slots": slots,
                    "tasks": tasks,
                    "seconds": round(elapsed, 3),
                    "rate": rate,
                    "efficiency": efficiency,
                    "worker_rss_bytes": rss,
                    "run_seconds": summarize(runs).as_dict(),
                    "queue_wait_seconds": summarize(waits).as_dict(),
                }
            )
            say(f"  {slots:2d} slots: {rate:6.2f} tasks/s, efficiency {efficiency:.3f}")
        return out

    # ----------------------------------------------------------------- the run

    async def run(self) -> dict[str, Any]:
        """Every phase; the measurements so far are in :attr:`results` even on failure."""
        ctx, plan, timer, res = self.ctx, self.plan, self.ctx.timer, self.results
        with timer("system: start the stack"):
            await asyncio.to_thread(self.stack.start)
        connection = await aio_pika.connect(ctx.node.amqp_url)
        try:
            self._channel = await connection.channel()
            await self._wait_consumers(CELERY_QUEUE, present=True)
            await self._wait_consumers(DIRECT_QUEUE, present=True)
            await asyncio.sleep(2)
            res["memory"] = {"at_rest": self._rss()}
            async with LoadGenerator(plan.concurrency) as load:
                await self._phases(load)
        finally:
            with timer("system: stop the stack"):
                await connection.close()
                await asyncio.to_thread(self.stack.stop)
        return res

    async def _phases(self, load: LoadGenerator) -> None:
        plan, timer, res = self.plan, self.ctx.timer, self.results
        with timer("system: workers paused, callback → live stream at rest"):
            await self._pause_workers()
            reserved = await self._create_reserved(load, 2 * plan.callback_samples)
            async with self._following():
                at_rest, rest_timeouts = await self._callback_latency(
                    reserved[: plan.callback_samples], gap=0.02
                )
            res["callback_to_stream"] = {
                "at_rest": summarize(at_rest).as_dict(),
                "at_rest_timeouts": rest_timeouts,
            }
        res["submit"] = {}
        for method in ("celery", "rabbitmq"):
            with timer(f"system: submit rate {method}"):
                res["submit"][method] = await self._submit_rate(load, method)
        with timer("system: workers resumed"):
            await self._purge(CELERY_QUEUE, DIRECT_QUEUE)
            await self._resume_workers()

        async with self._following():
            res["latency"] = {}
            for method in ("celery", "rabbitmq"):
                with timer(f"system: submit → DONE latency {method}"):
                    res["latency"][method] = await self._submit_to_done(method)
            with timer("system: sync latency"):
                res["latency"]["sync"] = await self._sync_latency()

            res["pipeline"] = {}
            with MemorySampler(self.services()) as sampler:
                with timer("system: pipeline celery (+ callbacks under load)"):
                    under_load = asyncio.create_task(
                        self._callback_latency(reserved[plan.callback_samples :], gap=0.1)
                    )
                    with profile(self.ctx, "api-pipeline-celery", self._pid("api")):
                        res["pipeline"]["celery"] = await self._pipeline(load, "celery")
                    loaded, load_timeouts = await under_load
                    res["callback_to_stream"]["under_load"] = summarize(loaded).as_dict()
                    res["callback_to_stream"]["under_load_timeouts"] = load_timeouts
                with timer("system: pipeline rabbitmq"):
                    res["pipeline"]["rabbitmq"] = await self._pipeline(load, "rabbitmq")
            res["memory"]["under_load"] = sampler.peak
            with timer("system: scaling (1-s tasks)"):
                res["scaling"] = await self._scaling(load)
