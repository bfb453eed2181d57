"""The broker dies (scenarios 4 and 5)."""

from __future__ import annotations

import statistics
import threading
import time
from collections import Counter

import httpx
import pytest

from .faultkit import Scenario, latency_summary, wait_until


@pytest.mark.scenario("4 kill -9 broker, queued")
def test_kill_broker_with_tasks_queued(scenario: Scenario) -> None:
    fx = scenario.fx
    bodies = [
        {"method": m, "duration": 0.1, "fail_times": int(i % 5 == 0)}
        for m in ("celery", "rabbitmq")
        for i in range(40)
    ]
    scenario.submit_many(bodies, threads=8)
    scenario.wait_counts("some tasks done", lambda c: c.get("DONE", 0) >= 5)
    scenario.fault("kill -9 broker")
    fx.node.kill()
    pending = scenario.counts().get("PENDING", 0)
    scenario.note(f"{pending} task(s) queued at the kill")
    assert pending >= 10, "the broker died with (almost) nothing queued"
    fx.node.start()
    # Persistent messages of durable queues survive; every worker reconnects by itself.
    scenario.check(timeout=120)


class Submitter(threading.Thread):
    """Submits tasks one after another (bounded in count and time) and keeps the answers."""

    def __init__(self, scenario: Scenario, limit: int = 2000, seconds: float = 90) -> None:
        super().__init__(name="submitter", daemon=True)
        self.scenario = scenario
        self.limit = limit
        self.seconds = seconds
        self.answers: list[tuple[int, float, str]] = []  # (status, seconds, detail)
        self.halt = threading.Event()
        self.lock = threading.Lock()

    def run(self) -> None:
        deadline = time.monotonic() + self.seconds
        methods = ("celery", "rabbitmq", "sync")
        with self.scenario.fx.client(timeout=30) as http:
            for i in range(self.limit):
                if self.halt.is_set() or time.monotonic() > deadline:
                    return
                body: dict[str, object] = {"method": methods[i % 3], "duration": 0}
                if body["method"] == "sync":
                    body["wait"] = 5  # a sync task caught by the outage answers 504 soon
                started = time.monotonic()
                try:
                    resp = http.post("/api/tasks", json=body)
                except httpx.HTTPError as exc:
                    # No answer: we cannot know whether it was accepted. Never expected.
                    with self.lock:
                        self.answers.append((0, time.monotonic() - started, repr(exc)))
                    continue
                elapsed = time.monotonic() - started
                self.scenario.accept(resp)
                detail = "" if resp.status_code < 300 else str(resp.json().get("detail"))
                with self.lock:
                    self.answers.append((resp.status_code, elapsed, detail))
                if resp.status_code == 503:
                    time.sleep(0.05)  # a client backing off a little; still bounded

    def count(self, code: int, since: int = 0) -> int:
        with self.lock:
            return sum(1 for c, _, _ in self.answers[since:] if c == code)

    def seen(self) -> int:
        with self.lock:
            return len(self.answers)


@pytest.mark.scenario("5 broker down while submitting")
def test_broker_down_while_submitting(scenario: Scenario) -> None:
    fx = scenario.fx
    submitter = Submitter(scenario)
    submitter.start()
    try:
        wait_until("submissions before the outage", lambda: submitter.count(202) >= 15, 30)
        scenario.fault("kill -9 broker")
        fx.node.kill()
        outage_from = submitter.seen()
        wait_until(
            "refusals during the outage", lambda: submitter.count(503, outage_from) >= 20, 30
        )
        with fx.client(timeout=10) as http:
            started = time.monotonic()
            assert http.get("/healthz").status_code == 200
            healthz = time.monotonic() - started
            assert http.get("/readyz").status_code == 503
        fx.node.start()
        back_from = submitter.seen()
        # No restart of any service: they reconnect by themselves.
        wait_until("submissions accepted again", lambda: submitter.count(202, back_from) >= 15, 60)
    finally:
        submitter.halt.set()
        submitter.join(60)
    codes = Counter(c for c, _, _ in submitter.answers)
    refused = [(t, d) for c, t, d in submitter.answers if c == 503]
    scenario.note(
        f"answers {dict(sorted(codes.items()))}; 503 latency "
        f"{latency_summary([t for t, _ in refused])}; /healthz in the outage {healthz * 1000:.0f}ms"
    )
    assert set(codes) <= {200, 202, 429, 503, 504}, codes
    assert all("broker" in d for _, d in refused), refused[:3]
    assert statistics.median(t for t, _ in refused) < 0.5
    assert max(t for t, _ in refused) < 6  # at most PUBLISH_TIMEOUT (3 s) and a margin
    scenario.check(timeout=120)
