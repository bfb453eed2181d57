"""Cancelling: a pending task never runs; a running task stops on its worker (Celery:
revoked and terminated; the consumer: told by the api's cancel notice)."""

from __future__ import annotations

import time

import pytest
from celery import Celery
from e2eclient import Target

from tasklab_common.queues import DIRECT_QUEUE


@pytest.mark.parametrize("method", ["celery", "rabbitmq"])
def test_cancelled_pending_task_never_runs(target: Target, method: str) -> None:
    # Occupy every worker slot (concurrency 3), so the next task waits in the queue.
    blockers = [target.submit_ok(method=method, duration=2) for _ in range(3)]
    victim = target.submit_ok(method=method, duration=0)
    resp = target.http.post(f"/api/tasks/{victim['id']}/cancel")
    assert resp.status_code == 200, resp.text
    assert resp.json()["status"] == "CANCELLED"
    for b in blockers:
        assert target.wait_status(b["id"])["status"] == "DONE"
    # The cancelled task's message has been delivered and skipped by now.
    tail = target.submit_ok(method=method, duration=0)
    target.wait_status(tail["id"])
    after = target.task(victim["id"])
    assert after["status"] == "CANCELLED"
    assert after["started_at"] is None
    assert after["worker"] is None


def _active_ids(app: Celery) -> set[str]:
    active = app.control.inspect(timeout=2).active() or {}
    return {t["id"] for tasks in active.values() for t in tasks}


def test_running_celery_task_is_revoked(target: Target) -> None:
    if target.broker is None:
        pytest.skip("inspects the workers through the local broker")
    app = Celery("e2e-inspect", broker=target.broker.amqp_url, set_as_current=False)
    task = target.submit_ok(method="celery", duration=60)
    target.wait_status(task["id"], {"IN_PROGRESS"}, timeout=15)
    assert task["id"] in _active_ids(app)
    resp = target.http.post(f"/api/tasks/{task['id']}/cancel")
    assert resp.status_code == 200, resp.text
    deadline = time.monotonic() + 15
    while task["id"] in _active_ids(app):
        assert time.monotonic() < deadline, "the revoked task is still running"
    assert target.task(task["id"])["status"] == "CANCELLED"
    # The worker keeps serving.
    after = target.submit_ok(method="celery", duration=0)
    assert target.wait_status(after["id"])["status"] == "DONE"
    app.close()
    if target.stack is not None:
        # Celery's warning that rpc:// cannot record the revoke (the api's messages have
        # no reply_to) is filtered out of the worker's log: nothing is wrong.
        log = target.stack.processes["celery-worker"].log_text()
        assert "Failed to mark task" not in log, log[-2000:]


def test_running_direct_task_is_stopped_on_its_consumer(target: Target) -> None:
    """The consumer stops a cancelled task's work at once and acknowledges its message:
    without the api's cancel notice it would hold it for the task's whole minute."""
    if target.broker is None:
        pytest.skip("reads the direct queue's figures from the local broker")
    task = target.submit_ok(method="rabbitmq", duration=60)
    target.wait_status(task["id"], {"IN_PROGRESS"}, timeout=15)
    target.broker.wait_queue_counts(DIRECT_QUEUE, ready=0, unacked=1)
    resp = target.http.post(f"/api/tasks/{task['id']}/cancel")
    assert resp.status_code == 200, resp.text
    assert resp.json()["status"] == "CANCELLED"
    # Settled long before the minute is up (the broker's figures lag about a second).
    target.broker.wait_queue_counts(DIRECT_QUEUE, ready=0, unacked=0, timeout=10)
    if target.stack is not None:
        log = target.stack.processes["consumer"].log_text()
        assert f"Task {task['num']} cancelled" in log, log[-2000:]
        assert f"Task {task['num']} finished" not in log, log[-2000:]
    after = target.task(task["id"])
    assert (after["status"], after["result"]) == ("CANCELLED", None)
    # The consumer keeps serving.
    done = target.submit_ok(method="rabbitmq", duration=0)
    assert target.wait_status(done["id"])["status"] == "DONE"


def test_final_task_cannot_be_cancelled(target: Target) -> None:
    task = target.submit_ok(method="sync", duration=0)
    assert task["status"] == "DONE"
    resp = target.http.post(f"/api/tasks/{task['id']}/cancel")
    assert resp.status_code == 409
    assert "DONE" in resp.json()["detail"]
