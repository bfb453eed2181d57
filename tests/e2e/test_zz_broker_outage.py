"""The broker goes down and comes back (runs last: it restarts the session's broker)."""

from __future__ import annotations

import time

import pytest
from e2eclient import Target


def test_broker_down_is_fast_503_then_everything_recovers(target: Target) -> None:
    if target.broker is None:
        pytest.skip("needs a broker this test may stop")
    before = target.total()
    target.broker.kill()
    try:
        for method in ("celery", "rabbitmq", "sync"):
            started = time.monotonic()
            resp = target.submit(method=method, duration=0)
            elapsed = time.monotonic() - started
            assert resp.status_code == 503, resp.text
            assert "broker" in resp.json()["detail"]
            assert elapsed < 6, f"503 took {elapsed:.1f}s"
        assert target.total() == before
        ready = target.http.get("/readyz")
        assert ready.status_code == 503
    finally:
        target.broker.start()
    # The api, the Celery worker and the consumer reconnect by themselves.
    deadline = time.monotonic() + 60
    while target.http.get("/readyz").status_code != 200:
        assert time.monotonic() < deadline, "api did not reconnect to the broker"
        time.sleep(0.5)
    for method in ("celery", "rabbitmq", "sync"):
        task = target.submit_ok(method=method, duration=0)
        assert target.wait_status(task["id"], timeout=60)["status"] == "DONE", method
