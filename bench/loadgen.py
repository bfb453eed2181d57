"""The one load generator: async httpx, bounded concurrency, a fixed request count.

Every HTTP rate in the results (the baseline endpoints and the system) comes from
:class:`LoadGenerator`, so the ratios compare servers, not clients.

Each of the ``concurrency`` workers has its own ``httpx.AsyncClient`` holding one
keep-alive connection: a single client with a pool of many connections spends
several times more CPU per request in the pool's bookkeeping than the servers
measured here spend answering, and this machine has two cores to share. The
client's CPU time per request is recorded with every run.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

import httpx

__all__ = ["JSON_HEADERS", "Body", "LoadGenerator", "LoadResult"]

#: Every request is a JSON body, encoded once up front.
JSON_HEADERS = {"Content-Type": "application/json"}

#: One body for every request, or a function of the request's index.
Body = dict[str, Any] | Callable[[int], dict[str, Any]]


@dataclass
class LoadResult:
    """Outcome of one run of the load generator."""

    requests: int
    concurrency: int
    seconds: float = 0.0
    ok: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    #: Wall-clock time (``time.time()``) just before the first request was sent.
    started_at: float = 0.0
    #: CPU seconds the load generator's process used during the run.
    client_cpu: float = 0.0
    #: Per successful request, with ``keep_answers``: (wall-clock send time, JSON answer).
    answers: list[tuple[float, Any]] = field(default_factory=list)

    @property
    def rate(self) -> float:
        """Successful requests per second."""
        return self.ok / self.seconds if self.seconds > 0 else 0.0

    @property
    def client_cpu_per_request_ms(self) -> float:
        return 1000 * self.client_cpu / self.requests if self.requests else 0.0

    def describe_errors(self) -> str:
        return ", ".join(f"{key} x{count}" for key, count in self.errors.most_common())


#: Connections idle longer than this are replaced before a run: the servers close
#: theirs after 5 s (uvicorn's keep-alive), and a request sent on a connection the
#: server is closing at that moment fails with a ReadError.
IDLE_SECONDS = 2.0


class LoadGenerator:
    """``concurrency`` workers, each with its own keep-alive connection."""

    def __init__(self, concurrency: int, timeout: float = 30.0) -> None:
        self.concurrency = concurrency
        self.timeout = timeout
        self.clients = self._new_clients()
        self._last_used = time.monotonic()

    def _new_clients(self) -> list[httpx.AsyncClient]:
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        return [
            httpx.AsyncClient(limits=limits, timeout=self.timeout, trust_env=False)
            for _ in range(self.concurrency)
        ]

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await asyncio.gather(*(client.aclose() for client in self.clients))

    async def run(
        self,
        url: str,
        body: Body,
        *,
        requests: int,
        expect: tuple[int, ...] = (200, 202),
        keep_answers: bool = False,
    ) -> LoadResult:
        """POST ``requests`` JSON bodies to ``url``, at most ``concurrency`` at a time.

        A request is successful when its status is in ``expect``; the others are
        counted by status code (or exception name) in ``errors``.
        """
        if time.monotonic() - self._last_used > IDLE_SECONDS:
            await asyncio.gather(*(client.aclose() for client in self.clients))
            self.clients = self._new_clients()
        if callable(body):
            payloads = [json.dumps(body(i)).encode() for i in range(requests)]
        else:
            payloads = [json.dumps(body).encode()] * requests
        workers = min(self.concurrency, requests)
        result = LoadResult(requests=requests, concurrency=workers)
        next_index = 0

        async def worker(client: httpx.AsyncClient) -> None:
            nonlocal next_index
            while next_index < requests:
                index = next_index
                next_index += 1
                sent_wall = time.time()
                began = time.perf_counter()
                try:
                    response = await client.post(url, content=payloads[index], headers=JSON_HEADERS)
                except httpx.HTTPError as exc:
                    result.errors[type(exc).__name__] += 1
                    continue
                elapsed = time.perf_counter() - began
                if response.status_code in expect:
                    result.ok += 1
                    result.latencies.append(elapsed)
                    if keep_answers:
                        result.answers.append((sent_wall, response.json()))
                else:
                    result.errors[f"HTTP {response.status_code}"] += 1

        result.started_at = time.time()
        cpu = time.process_time()
        began = time.perf_counter()
        await asyncio.gather(*(worker(client) for client in self.clients[:workers]))
        result.seconds = time.perf_counter() - began
        result.client_cpu = time.process_time() - cpu
        self._last_used = time.monotonic()
        return result
