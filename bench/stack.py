"""The system under test: the real local stack (api, Celery worker, consumer) on the
private broker, and what the measurements do with it.

The services run with the commands of their images and the production reliability
settings (publisher confirms, persistent messages, durable queues, ``acks_late``,
``reject_on_worker_lost``); only the per-client submission limit is lifted
(``SUBMIT_RATE=0``), since all the load comes from one address. The task store is
SQLite, as for a single api process.

A method's workers are *paused* so that submissions only reach the broker: the Celery
worker stops consuming its queue (``cancel_consumer``), the consumer is stopped.
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
from aio_pika.abc import AbstractChannel, AbstractConnection

from bench import rawcelery
from bench.common import Context
from bench.events import EventStream
from bench.loadgen import LoadGenerator
from bench.procstat import Service, rss_bytes, scan
from tasklab_common.queues import CELERY_QUEUE, DIRECT_QUEUE
from tasklab_devtools.procs import free_port
from tasklab_devtools.stack import LocalStack, StackConfig, celery_process

__all__ = ["METHODS", "QUEUE_OF", "SystemStack", "epoch"]

#: The asynchronous methods measured (``sync`` is measured by its latency only).
METHODS = ("celery", "rabbitmq")
QUEUE_OF = {"celery": CELERY_QUEUE, "rabbitmq": DIRECT_QUEUE}
#: Node name of the stack's Celery worker (started without ``-n``).
SYSTEM_WORKER = f"celery@{socket.gethostname()}"


def epoch(iso: str) -> float:
    """Seconds since the epoch of an ISO 8601 time of the api's JSON."""
    return datetime.fromisoformat(iso).timestamp()


class SystemStack:
    """The stack, its broker channel for queue checks, and the controls of its workers."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        rawcelery.app.conf.update(broker_url=ctx.node.amqp_url)  # for control commands
        self.cfg = StackConfig(
            rmq_url=ctx.node.amqp_url,
            database_url=f"sqlite:///{ctx.work}/tasklab.db",
            callback_secret=secrets.token_urlsafe(32),
            api_port=free_port(),
            celery_concurrency=ctx.plan.worker_concurrency,
            consumer_concurrency=ctx.plan.worker_concurrency,
            log_dir=ctx.logs,
            rmq_management_url=ctx.node.management_url,
            extra_env={"SUBMIT_RATE": "0"},
            cwd=ctx.work,
        )
        self.stack = LocalStack(self.cfg)
        self.submit_url = f"{self.cfg.api_base_url}/api/tasks"
        self._connection: AbstractConnection | None = None
        self._channel: AbstractChannel | None = None
        self.paused: set[str] = set()

    # ----------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        await asyncio.to_thread(self.stack.start)
        self._connection = await aio_pika.connect(self.ctx.node.amqp_url)
        self._channel = await self._connection.channel()
        for queue in QUEUE_OF.values():
            await self.wait_consumers(queue, present=True)

    async def stop(self) -> None:
        if self._connection is not None:
            await self._connection.close()
        await asyncio.to_thread(self.stack.stop)

    # ----------------------------------------------------------------- processes

    def pid(self, name: str) -> int | None:
        proc = self.stack.processes.get(name)
        return proc.pid if proc is not None and proc.running() else None

    def rabbit_pid(self) -> int | None:
        try:
            return int((self.ctx.node.base_dir / "rabbitmq.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def services(self) -> dict[str, Service]:
        """Every process of the system: its three services and the broker."""
        return {
            "api": Service(lambda: self.pid("api")),
            "celery-worker": Service(lambda: self.pid("celery-worker")),
            "consumer": Service(lambda: self.pid("consumer")),
            "rabbitmq": self.broker_service(),
        }

    def broker_service(self) -> Service:
        return Service(self.rabbit_pid, tree=True)

    def rss(self) -> dict[str, int]:
        table = scan()
        return {name: rss_bytes(service, table) for name, service in self.services().items()}

    # ----------------------------------------------------------------- queues

    @property
    def channel(self) -> AbstractChannel:
        assert self._channel is not None, "the stack is not started"
        return self._channel

    async def consumers(self, queue: str) -> int:
        declared = await self.channel.declare_queue(queue, durable=True, passive=True)
        return int(declared.declaration_result.consumer_count or 0)

    async def wait_consumers(self, queue: str, present: bool, timeout: float = 60) -> None:
        deadline = time.monotonic() + self.ctx.budget.cap(timeout)
        while (await self.consumers(queue) > 0) != present:
            if time.monotonic() > deadline:
                raise TimeoutError(f"queue {queue}: consumers {'not ' * present}there in time")
            await asyncio.sleep(0.05)

    async def purge(self, *queues: str) -> None:
        for queue in queues:
            declared = await self.channel.declare_queue(queue, durable=True, passive=True)
            await declared.purge()

    # ----------------------------------------------------------------- workers

    async def _control(self, command: str, queue: str) -> None:
        control = rawcelery.app.control
        call = control.cancel_consumer if command == "cancel" else control.add_consumer
        replies = await asyncio.to_thread(call, queue, destination=[SYSTEM_WORKER], reply=True)
        if not replies:
            raise RuntimeError(f"{SYSTEM_WORKER} did not answer {command}_consumer")

    async def pause(self, *methods: str) -> None:
        """Stop the workers of ``methods`` from taking tasks (their queues fill up)."""
        for method in methods:
            if method in self.paused:
                continue
            if method == "celery":
                await self._control("cancel", CELERY_QUEUE)
            else:
                await asyncio.to_thread(self.stack.processes["consumer"].terminate)
            await self.wait_consumers(QUEUE_OF[method], present=False)
            self.paused.add(method)

    async def resume(self, *methods: str) -> None:
        """Let the workers of ``methods`` take tasks again; returns once they consume."""
        for method in methods:
            if method not in self.paused:
                continue
            if method == "celery":
                await self._control("add", CELERY_QUEUE)
            else:
                self.stack.processes["consumer"].start()
            await self.wait_consumers(QUEUE_OF[method], present=True)
            self.paused.discard(method)

    async def restart_worker(self, slots: int) -> None:
        """The Celery worker again, with ``slots`` pool processes."""
        proc = self.stack.processes["celery-worker"]
        await asyncio.to_thread(proc.terminate)
        await self.wait_consumers(CELERY_QUEUE, present=False)
        proc.argv = celery_process(self.cfg, concurrency=slots).argv
        proc.start()
        await self.wait_consumers(CELERY_QUEUE, present=True, timeout=180)

    # ----------------------------------------------------------------- tasks

    @contextlib.asynccontextmanager
    async def following(self) -> AsyncIterator[EventStream]:
        """The api's live stream, followed while the block runs."""
        stream = EventStream(self.cfg.api_base_url)
        try:
            await stream.start()
            yield stream
        finally:
            await stream.close()

    async def submit(
        self, load: LoadGenerator, method: str, count: int, duration: float = 0
    ) -> list[tuple[float, str]]:
        """``count`` tasks submitted by the load generator: (send time, id) of each."""
        run = await load.run(
            self.submit_url,
            {"method": method, "duration": duration},
            requests=count,
            keep_answers=True,
        )
        if run.errors:
            raise RuntimeError(f"submissions failed: {run.describe_errors()}")
        return [(sent, str(answer["id"])) for sent, answer in run.answers]

    async def reserve(self, load: LoadGenerator, count: int) -> list[str]:
        """Tasks no worker will run (the Celery worker paused, their messages purged):
        targets of the callback measurements."""
        await self.pause("celery")
        tasks = await self.submit(load, "celery", count)
        await self.purge(CELERY_QUEUE)
        return [task_id for _, task_id in tasks]

    async def wait_done(
        self, stream: EventStream, ids: list[str], timeout: float
    ) -> dict[str, dict[str, Any]]:
        """Wait until every task is DONE; the DONE task (the api's JSON) by id.

        The live stream says when; should it miss some (a subscriber too slow is
        dropped and reconnects), the tasks still missing are read from the api.
        """
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

    async def done_times(
        self, client: httpx.AsyncClient, ids: list[str], since: float
    ) -> dict[str, float]:
        """``finished_at`` of the DONE tasks among ``ids``, read from the api's list
        (the tasks changed since ``since``, 500 a page)."""
        wanted = set(ids)
        found: dict[str, float] = {}
        offset = 0
        since_iso = datetime.fromtimestamp(since).astimezone().isoformat()
        while True:
            response = await client.get(
                self.submit_url,
                params={
                    "status": "DONE",
                    "updated_since": since_iso,
                    "limit": 500,
                    "offset": offset,
                },
            )
            response.raise_for_status()
            page = response.json()
            for task in page["items"]:
                if task["id"] in wanted and task.get("finished_at"):
                    found[task["id"]] = epoch(task["finished_at"])
            offset += len(page["items"])
            if not page["items"] or offset >= page["total"]:
                return found
