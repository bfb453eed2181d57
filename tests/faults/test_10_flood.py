"""A bounded flood of submissions (scenario 10), on loopback only.

The client is a small HTTP/1.1 keep-alive client on asyncio streams: it can send
thousands of requests a second from one process, which an ordinary HTTP client
library cannot on two shared cores. Every request is counted; the api must answer
each one with 202, 429 or 503; ``/healthz`` is timed all along from a thread. Each
request also claims a different client address (``X-Forwarded-For``), which the
submission limit must ignore (the api trusts no proxy unless told to).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import pytest

from .faultkit import Scenario, latency_summary, percentile, wait_until

#: At most this many submissions, for at most this long; the flood ends sooner, once
#: the submission limit has answered LIMIT_MET times. The limit (SUBMIT_BURST 200, then
#: SUBMIT_RATE 50/s) is met only when the api serves more than 50 submissions a second:
#: a fixed 6-s flood never met it on a loaded machine (fewer than 500 served in 6 s).
FLOOD_REQUESTS = 10_000
FLOOD_SECONDS = 30.0
LIMIT_MET = 50
CONNECTIONS = 48


@dataclass
class FloodResult:
    codes: Counter[int] = field(default_factory=Counter)
    accepted: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    sent: int = 0
    seconds: float = 0.0


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
    body = await reader.readexactly(length) if length else b""
    return status, body


async def _flood(url: str, total: int, seconds: float, connections: int) -> FloodResult:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    result = FloodResult()
    bodies = [json.dumps({"method": m, "duration": 0}).encode() for m in ("celery", "rabbitmq")]

    def request(n: int) -> bytes:
        # Every request claims another client address: the limit must not believe it.
        body = bodies[n % 2]
        return (
            f"POST /api/tasks HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"X-Forwarded-For: 10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode() + body

    deadline = time.monotonic() + seconds
    started = time.monotonic()

    async def worker() -> None:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while (
                result.sent < total
                and time.monotonic() < deadline
                and result.codes[429] < LIMIT_MET
            ):
                writer.write(request(result.sent))
                result.sent += 1
                try:
                    status, body = await asyncio.wait_for(_read_response(reader), 30)
                except (OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
                    result.errors.append(repr(exc))
                    return
                result.codes[status] += 1
                if status == 202:
                    result.accepted.append(json.loads(body)["id"])
        finally:
            writer.close()

    await asyncio.gather(*(worker() for _ in range(connections)))
    result.seconds = time.monotonic() - started
    return result


class HealthProbe(threading.Thread):
    """Times ``GET /healthz`` back to back (a fresh request every 20 ms) until halted."""

    def __init__(self, scenario: Scenario, limit: int = 2000) -> None:
        super().__init__(name="healthz-probe", daemon=True)
        self.scenario = scenario
        self.limit = limit
        self.latencies: list[float] = []
        self.failures: list[str] = []
        self.halt = threading.Event()

    def run(self) -> None:
        with self.scenario.fx.client(timeout=10) as http:
            for _ in range(self.limit):
                started = time.monotonic()
                try:
                    ok = http.get("/healthz").status_code == 200
                except Exception as exc:
                    self.failures.append(repr(exc))
                    ok = True
                elapsed = time.monotonic() - started
                if ok:
                    self.latencies.append(elapsed)
                else:
                    self.failures.append(f"status after {elapsed:.2f}s")
                if self.halt.wait(max(0.0, 0.02 - elapsed)):
                    return


@pytest.mark.scenario("10 flood of submissions")
def test_bounded_flood(scenario: Scenario) -> None:
    fx = scenario.fx
    published_before = fx.published_settled()
    idle = HealthProbe(scenario, limit=25)
    idle.run()  # the baseline, in this thread
    probe = HealthProbe(scenario)
    probe.start()
    try:
        flood = asyncio.run(_flood(fx.base_url, FLOOD_REQUESTS, FLOOD_SECONDS, CONNECTIONS))
    finally:
        probe.halt.set()
        probe.join(30)
    for task_id in flood.accepted:
        scenario.accepted[task_id] = "DONE"
    scenario.responses.update(flood.codes)
    rate = flood.sent / flood.seconds
    scenario.note(
        f"{flood.sent} requests in {flood.seconds:.1f}s ({rate:.0f}/s): "
        f"{dict(sorted(flood.codes.items()))}; /healthz idle {latency_summary(idle.latencies)}, "
        f"in the flood {latency_summary(probe.latencies)}"
    )
    assert not flood.errors, flood.errors[:5]
    assert set(flood.codes) <= {202, 429, 503}, flood.codes
    assert flood.codes[429] > 0, "the flood never met the submission limit"
    assert sum(flood.codes.values()) == flood.sent
    scenario.check(timeout=180, max_duplicates=0)
    # Accepted == enqueued: the task queues got exactly one message per 2xx.
    wait_until(
        f"{len(flood.accepted)} messages published",
        lambda: fx.published() - published_before == len(flood.accepted),
        15,
        interval=0.5,
        detail=lambda: fx.published() - published_before,
    )
    # /healthz stays fast: generous bounds for a shared two-core machine.
    assert not probe.failures, probe.failures[:5]
    assert len(probe.latencies) >= 20
    assert percentile(probe.latencies, 95) < 1.0, latency_summary(probe.latencies)
    assert max(probe.latencies) < 3.0, latency_summary(probe.latencies)
