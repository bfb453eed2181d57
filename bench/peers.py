"""The peers: Celery tracking its own statuses, as a user would pick it instead.

Each peer is a Celery worker of :mod:`bench.peerapp` (our worker's reliability
settings, ``task_track_started``, prefork with the stack's concurrency) in a virtual
host of its own on the private broker, so that no peer sees another's messages or
events:

- **Celery + PostgreSQL**: the SQLAlchemy result backend (``db+postgresql+psycopg``)
  on a private PostgreSQL server (Debian's, default settings); statuses read from
  its ``celery_taskmeta`` table (``date_done``);
- **Celery + Redis**: the Redis result backend on a private ``redis-server``;
  statuses read from its ``celery-task-meta-*`` keys (``date_done``);
- **Celery + Flower**: no result backend; the worker sends task events (``-E``) and
  Flower follows them; statuses read from Flower's API (``/api/tasks``, the
  worker's ``succeeded`` time).

Tasks are sent with ``send_task`` by a client app without a result backend (a client
with the Redis backend would also subscribe to each task's result channel, a cost of
that client, not of the peer).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import socket
import time
from datetime import UTC, datetime
from typing import Any

import httpx
import psycopg
import redis
from celery import Celery

from bench.common import Context, python_process, wait_http
from bench.drain import DrainTarget
from bench.peerapp import NOOP, PEER_QUEUE, configure
from bench.procstat import CpuAccount, Service
from tasklab_devtools.pg import PgServer
from tasklab_devtools.procs import ManagedProcess, free_port
from tasklab_devtools.redisserver import RedisServer

__all__ = ["CeleryPeer", "FlowerPeer", "PostgresPeer", "RedisPeer"]

#: Keys of the Redis result backend.
REDIS_KEY = "celery-task-meta-{}"


class CeleryPeer(DrainTarget):
    """A peer's Celery worker, its client app and its controls."""

    def __init__(
        self,
        ctx: Context,
        broker_url: str,
        broker: Service,
        backend: str | None = None,
        events: bool = False,
    ) -> None:
        self.ctx = ctx
        self.broker = broker
        self.client = configure(Celery(f"bench-{self.name}-client", broker=broker_url), None)
        self.node_name = f"bench-{self.name}@{socket.gethostname()}"
        argv = [
            "celery",
            "-A",
            "bench.peerapp",
            "worker",
            "--loglevel=info",
            f"--concurrency={ctx.plan.worker_concurrency}",
            "-n",
            f"bench-{self.name}@%h",
            "-Q",
            PEER_QUEUE,
        ]
        self.worker = python_process(
            ctx,
            f"{self.name}-worker",
            [*argv, "-E"] if events else argv,
            BENCH_PEER_BROKER=broker_url,
            BENCH_PEER_BACKEND=backend or "",
        )
        #: ``send_task`` per second while preloading (one thread, publisher confirms).
        self.send_rates: list[float] = []

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> None:
        self.worker.start()
        deadline = time.monotonic() + self.ctx.budget.cap(90)
        while not self.client.control.ping(destination=[self.node_name], timeout=1.0):
            if not self.worker.running():
                raise RuntimeError(f"{self.worker.name} exited:\n{self.worker.log_tail()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.node_name} did not answer a ping")

    def stop(self) -> None:
        self.worker.terminate()
        self.client.close()

    def services(self) -> dict[str, Service]:
        return {"celery-worker": Service(lambda: self.worker.pid), "rabbitmq": self.broker}

    # ----------------------------------------------------------------- drain

    def _control(self, command: str) -> None:
        control = self.client.control
        call = control.cancel_consumer if command == "cancel" else control.add_consumer
        if not call(PEER_QUEUE, destination=[self.node_name], reply=True):
            raise RuntimeError(f"{self.node_name} did not answer {command}_consumer")

    async def pause(self) -> None:
        await asyncio.to_thread(self._control, "cancel")

    async def preload(self, tasks: int) -> list[str]:
        return await asyncio.to_thread(self._send, tasks)

    def _send(self, tasks: int) -> list[str]:
        began = time.perf_counter()
        ids = [self.client.send_task(NOOP).id for _ in range(tasks)]
        self.send_rates.append(tasks / (time.perf_counter() - began))
        return ids

    async def resume(self, account: CpuAccount) -> None:
        await asyncio.to_thread(self._control, "add")

    async def cleanup(self) -> None:
        await asyncio.to_thread(self.client.control.purge)
        await asyncio.to_thread(self._control, "add")

    def profiled(self) -> list[tuple[str, int | None, bool]]:
        return [(f"{self.name}-worker", self.worker.pid, True)]

    def figures(self) -> dict[str, Any]:
        return {"send_rates": [round(rate, 1) for rate in self.send_rates]}


class PostgresPeer(CeleryPeer):
    """Celery + the SQLAlchemy result backend on PostgreSQL."""

    name = "celery-postgres"
    label = "Celery + PostgreSQL backend"
    where = "celery_taskmeta.date_done"

    def __init__(self, ctx: Context, broker_url: str, broker: Service, pg: PgServer) -> None:
        self.pg = pg
        database = "bench_celery"
        with psycopg.connect(pg.url, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {database}")
        self.url = pg.url.rpartition("/")[0] + f"/{database}"
        backend = "db+" + self.url.replace("postgresql://", "postgresql+psycopg://", 1)
        super().__init__(ctx, broker_url, broker, backend=backend)
        self._conn: psycopg.Connection[Any] | None = None

    def _postmaster(self) -> int | None:
        try:
            return int((self.pg.data_dir / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def services(self) -> dict[str, Service]:
        return {**super().services(), "postgresql": Service(self._postmaster, tree=True)}

    def _query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        if self._conn is None:
            self._conn = psycopg.connect(self.url, autocommit=True)
        cursor = self._conn.execute(sql, params)
        return cursor.fetchall() if cursor.description else []

    async def reset(self) -> None:
        exists = await asyncio.to_thread(self._query, "SELECT to_regclass('celery_taskmeta')")
        if exists[0][0] is not None:
            await asyncio.to_thread(self._query, "TRUNCATE celery_taskmeta")

    async def is_final(self, task_id: str) -> bool:
        rows = await asyncio.to_thread(
            self._query, "SELECT status FROM celery_taskmeta WHERE task_id = %s", task_id
        )
        return bool(rows) and rows[0][0] == "SUCCESS"

    async def final_times(self, ids: list[str]) -> dict[str, float]:
        rows = await asyncio.to_thread(
            self._query,
            "SELECT task_id, extract(epoch FROM date_done)::float8 FROM celery_taskmeta "
            "WHERE status = 'SUCCESS' AND task_id = ANY(%s)",
            ids,
        )
        return {str(task_id): float(done) for task_id, done in rows}

    def stop(self) -> None:
        if self._conn is not None:
            self._conn.close()
        super().stop()


class RedisPeer(CeleryPeer):
    """Celery + the Redis result backend."""

    name = "celery-redis"
    label = "Celery + Redis backend"
    where = "celery-task-meta-* date_done"

    def __init__(self, ctx: Context, broker_url: str, broker: Service, server: RedisServer) -> None:
        self.server = server
        super().__init__(ctx, broker_url, broker, backend=server.url(0))
        self.redis = redis.Redis.from_url(server.url(0))

    def services(self) -> dict[str, Service]:
        return {**super().services(), "redis": Service(lambda: self.server.pid)}

    async def reset(self) -> None:
        await asyncio.to_thread(self.redis.flushdb)

    def _read(self, ids: list[str]) -> list[dict[str, Any] | None]:
        values: list[dict[str, Any] | None] = []
        for start in range(0, len(ids), 1000):
            keys = [REDIS_KEY.format(task_id) for task_id in ids[start : start + 1000]]
            values += [None if raw is None else json.loads(raw) for raw in self.redis.mget(keys)]
        return values

    async def is_final(self, task_id: str) -> bool:
        [meta] = await asyncio.to_thread(self._read, [task_id])
        return meta is not None and meta.get("status") == "SUCCESS"

    async def final_times(self, ids: list[str]) -> dict[str, float]:
        metas = await asyncio.to_thread(self._read, ids)
        return {
            task_id: _timestamp(meta["date_done"])
            for task_id, meta in zip(ids, metas, strict=True)
            if meta is not None and meta.get("status") == "SUCCESS"
        }

    def stop(self) -> None:
        self.redis.close()
        super().stop()


def _timestamp(iso: str) -> float:
    when = datetime.fromisoformat(iso)
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


class FlowerPeer(CeleryPeer):
    """Celery with task events, followed by Flower; no result backend."""

    name = "celery-flower"
    label = "Celery + Flower (events, no backend)"
    where = "Flower's /api/tasks (succeeded)"

    def __init__(self, ctx: Context, broker_url: str, broker: Service) -> None:
        super().__init__(ctx, broker_url, broker, events=True)
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        # Flower's API needs a login (or an opt-out): a user and password of this run.
        self.auth = ("bench", secrets.token_urlsafe(18))
        self.flower: ManagedProcess = python_process(
            ctx,
            "flower",
            [
                "celery",
                "-A",
                "bench.peerapp",
                "flower",
                "--address=127.0.0.1",
                f"--port={self.port}",
            ],
            BENCH_PEER_BROKER=broker_url,
            FLOWER_BASIC_AUTH=":".join(self.auth),
        )
        self._http = httpx.AsyncClient(trust_env=False, timeout=30, auth=self.auth)

    def start(self) -> None:
        super().start()
        self.flower.start()
        wait_http(f"{self.base}/healthcheck", self.flower, timeout=self.ctx.budget.cap(60))

    def stop(self) -> None:
        self.flower.terminate()
        super().stop()

    async def close(self) -> None:
        await self._http.aclose()

    def services(self) -> dict[str, Service]:
        return {**super().services(), "flower": Service(lambda: self.flower.pid)}

    async def is_final(self, task_id: str) -> bool:
        response = await self._http.get(f"{self.base}/api/task/info/{task_id}")
        return response.status_code == 200 and response.json().get("state") == "SUCCESS"

    async def final_times(self, ids: list[str]) -> dict[str, float]:
        response = await self._http.get(f"{self.base}/api/tasks", params={"state": "SUCCESS"})
        response.raise_for_status()
        tasks: dict[str, dict[str, Any]] = response.json()
        return {
            task_id: float(tasks[task_id]["succeeded"])
            for task_id in ids
            if task_id in tasks and tasks[task_id].get("succeeded")
        }

    def profiled(self) -> list[tuple[str, int | None, bool]]:
        return [*super().profiled(), ("flower", self.flower.pid, False)]
