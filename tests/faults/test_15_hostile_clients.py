"""Hostile clients (scenario 15) and a compromised worker (scenario 16): what one
client or one stolen callback secret can make the api hold, store and send.

Figures: the api's RSS and /healthz latency during the attacks, the bytes the live
streams received, the series added to /metrics.
"""

from __future__ import annotations

import contextlib
import json
import socket
import statistics
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tasklab_common.messages import StatusUpdate
from tasklab_common.models import TaskStatus
from tasklab_common.signing import sign_headers

from .faultkit import FaultStack, Scenario, wait_until

MB = 1024 * 1024
#: Short read deadlines for the test (the defaults are 10 s and 30 s).
LIMITS = {"HEADER_TIMEOUT": "2", "BODY_TIMEOUT": "2"}


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


class Sampler:
    """/healthz latency and the api's RSS, sampled in a thread while an attack runs."""

    def __init__(self, base_url: str, pid: int) -> None:
        self.base_url, self.pid = base_url, pid
        self.latencies: list[float] = []
        self.failures = 0
        self.peak_rss = rss_mb(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(base_url=self.base_url, timeout=10) as client:
            while not self._stop.is_set():
                began = time.monotonic()
                try:
                    ok = client.get("/healthz").status_code == 200
                except httpx.HTTPError:
                    ok = False
                self.latencies.append(time.monotonic() - began)
                self.failures += not ok
                self.peak_rss = max(self.peak_rss, rss_mb(self.pid))
                self._stop.wait(0.1)

    @contextmanager
    def running(self) -> Iterator[Sampler]:
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join(15)

    def p95(self) -> float:
        return statistics.quantiles(self.latencies, n=20)[-1] if len(self.latencies) > 1 else 0


def address(fx: FaultStack) -> tuple[str, int]:
    parts = urlsplit(fx.base_url)
    return parts.hostname or "127.0.0.1", parts.port or 80


def answer(sock: socket.socket, timeout: float) -> bytes:
    """What the server sent until it closed (or ``timeout``)."""
    sock.settimeout(timeout)
    got = b""
    try:
        while chunk := sock.recv(65536):
            got += chunk
    except TimeoutError:
        return got + b"<still open>"
    except OSError:
        pass
    return got


def send_all(sock: socket.socket, data: bytes) -> None:
    with contextlib.suppress(OSError):  # the server closed first: what the test wants
        sock.sendall(data)


@contextmanager
def api_with(fx: FaultStack, env: dict[str, str]) -> Iterator[None]:
    fx.api.env.update(env)
    fx.api.restart()
    fx.wait_ready()
    try:
        yield
    finally:
        for name in env:
            fx.api.env.pop(name, None)
        fx.api.restart()
        fx.wait_ready()


@pytest.mark.scenario("15 hostile clients")
def test_hostile_clients_cannot_exhaust_the_api(scenario: Scenario) -> None:
    fx = scenario.fx
    host, port = address(fx)
    with api_with(fx, LIMITS):
        scenario.reset_http()
        total = scenario.http.get("/api/tasks", params={"limit": 1}).json()["total"]
        assert fx.api.pid is not None
        before = rss_mb(fx.api.pid)
        sampler = Sampler(fx.base_url, fx.api.pid)
        with sampler.running():
            # 1. Unfinished 8 MB headers on 20 connections: each cut off at the limit.
            big = [socket.create_connection((host, port)) for _ in range(20)]
            for sock in big:
                send_all(sock, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ")
                send_all(sock, b"a" * (8 * MB))
            big_answers = [answer(s, 10) for s in big]
            # 2. A complete 8 MB header.
            with socket.create_connection((host, port)) as sock:
                send_all(sock, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ")
                send_all(sock, b"a" * (8 * MB) + b"\r\n\r\n")
                whole = answer(sock, 10)
            # 3. 300 slow headers and 300 slow bodies, a byte at a time.
            slow_head = [socket.create_connection((host, port)) for _ in range(300)]
            for sock in slow_head:
                send_all(sock, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            slow_body = [socket.create_connection((host, port)) for _ in range(300)]
            for sock in slow_body:
                send_all(
                    sock,
                    b"POST /api/tasks HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
                    b"application/json\r\nContent-Length: 1000\r\n\r\n{",
                )
            began = time.monotonic()
            while time.monotonic() - began < 4:
                for sock in slow_head + slow_body:
                    send_all(sock, b"x")
                time.sleep(0.5)
            closed_head = [answer(s, 10) for s in slow_head]
            closed_body = [answer(s, 10) for s in slow_body]
            for sock in big + slow_head + slow_body:
                sock.close()
        after = rss_mb(fx.api.pid)

    assert all(a.startswith(b"HTTP/1.1 431 ") for a in big_answers), {a[:40] for a in big_answers}
    assert whole.startswith(b"HTTP/1.1 431 "), whole[:100]
    assert all(a.startswith(b"HTTP/1.1 408 ") for a in closed_head), {a[:40] for a in closed_head}
    assert all(not a.endswith(b"<still open>") for a in closed_body)
    assert sampler.failures == 0
    assert sampler.peak_rss - before < 100, (before, sampler.peak_rss)
    # Nothing was accepted from the slow bodies.
    assert scenario.http.get("/api/tasks", params={"limit": 1}).json()["total"] == total
    scenario.note(
        f"20 x 8 MB unfinished headers and one whole: 431; 300 slow headers: 408 within "
        f"{LIMITS['HEADER_TIMEOUT']} s; 300 slow bodies: closed within "
        f"{LIMITS['BODY_TIMEOUT']} s; api RSS {before:.0f} MB → peak "
        f"{sampler.peak_rss:.0f} MB (after {after:.0f} MB); /healthz n={len(sampler.latencies)} "
        f"p50={statistics.median(sampler.latencies) * 1000:.0f}ms "
        f"p95={sampler.p95() * 1000:.0f}ms, {sampler.failures} failed"
    )
    scenario.check()


class Streams:
    """``n`` live streams (/api/events), counting the bytes each receives."""

    def __init__(self, fx: FaultStack, n: int) -> None:
        self.socks = []
        for _ in range(n):
            sock = socket.create_connection(address(fx))
            sock.sendall(b"GET /api/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            self.socks.append(sock)
        self.received = [0] * n
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._read, args=(i,), daemon=True) for i in range(n)
        ]
        for t in self._threads:
            t.start()
        time.sleep(0.5)

    def _read(self, i: int) -> None:
        sock = self.socks[i]
        sock.settimeout(0.3)
        while not self._stop.is_set():
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            if not chunk:
                return
            self.received[i] += len(chunk)

    def total(self) -> int:
        return sum(self.received)

    def close(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(5)
        for sock in self.socks:
            sock.close()


def series(fx: FaultStack) -> tuple[int, int, int]:
    """(samples, celery_task_started samples, bytes) of /metrics."""
    text = httpx.get(fx.base_url + "/metrics", timeout=10).text
    samples = [line for line in text.splitlines() if line and not line.startswith("#")]
    started = sum(1 for line in samples if line.startswith("celery_task_started"))
    return len(samples), started, len(text)


@pytest.mark.scenario("16 compromised worker")
def test_a_compromised_worker_cannot_amplify(scenario: Scenario) -> None:
    """Reports signed with the real secret, as a stolen one allows: bounded results, a
    report that changes nothing announces nothing, worker names from a bounded set."""
    fx = scenario.fx
    done = scenario.submit_ok(method="rabbitmq", duration=0)
    wait_until("the task done", lambda: scenario.counts() == {"DONE": 1}, 30)
    shown = scenario.http.get(f"/api/tasks/{done['id']}").json()

    def post(update: StatusUpdate) -> int:
        body = update.model_dump_json().encode()
        return scenario.http.post(
            "/update_task_status_api/",
            content=body,
            headers={"Content-Type": "application/json", **sign_headers(fx.secret, body)},
        ).status_code

    def raw_post(body: bytes) -> httpx.Response:
        return scenario.http.post(
            "/update_task_status_api/",
            content=body,
            headers={"Content-Type": "application/json", **sign_headers(fx.secret, body)},
        )

    streams = Streams(fx, 10)
    series_before, started_before, metrics_before = series(fx)
    try:
        quiet = streams.total()
        # Oversized results and markup as a worker name: refused.
        blob = json.dumps(
            {"task_id": done["id"], "status": "DONE", "attempt": 2, "result": {"x": "x" * 500_000}}
        ).encode()
        oversized = [raw_post(blob).status_code for _ in range(5)]
        markup = raw_post(
            b'{"task_id": "%s", "status": "IN_PROGRESS", "worker": "<b>99 running</b>"}'
            % done["id"].encode()
        ).status_code
        # Stale reports on the finished task: accepted, applied nowhere, announced nowhere.
        stale = [
            post(StatusUpdate(task_id=done["id"], status=s, attempt=1, worker=f"evil-{i}"))
            for i, s in enumerate([TaskStatus.IN_PROGRESS, TaskStatus.FAILED] * 25)
        ]
        time.sleep(1.5)
        pushed_stale = streams.total() - quiet
        # Many worker names, each applied once (a task the "worker" claims again and
        # again): the metric labels stay bounded.
        victim = scenario.submit_ok(expect="CANCELLED", method="celery", duration=120)
        wait_until(
            "the victim running",
            lambda: scenario.counts([victim["id"]]) == {"IN_PROGRESS": 1},
            30,
        )
        claims = [
            post(
                StatusUpdate(
                    task_id=victim["id"],
                    status=TaskStatus.IN_PROGRESS,
                    attempt=a,
                    worker=f"w{uuid.uuid4().hex[:12]}@h{a}",
                )
            )
            for a in range(2, 202)
        ]
        series_after, started_after, metrics_after = series(fx)
        assert scenario.http.post(f"/api/tasks/{victim['id']}/cancel").status_code == 200
    finally:
        streams.close()

    assert oversized == [422] * 5 and markup == 422, (oversized, markup)
    assert set(stale) == {200}, stale
    assert pushed_stale == 0, pushed_stale
    assert scenario.http.get(f"/api/tasks/{done['id']}").json() == shown
    assert set(claims) == {200}, claims
    # Host names up to the bound (64, and "other"; each a _total and a _created sample),
    # not 200.
    assert started_after - started_before <= 2 * (64 + 1), (started_before, started_after)
    scenario.note(
        f"5 reports of 500 KB: 422; 50 stale reports: {pushed_stale} bytes to 10 live "
        f"streams, the task unchanged; 200 worker names: +{started_after - started_before} "
        f"celery_task_started samples (+{series_after - series_before} in all), "
        f"/metrics {metrics_before // 1024} → {metrics_after // 1024} KB"
    )
    scenario.check()
