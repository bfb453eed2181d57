"""The three task paths end to end: celery, rabbitmq (direct) and sync."""

from __future__ import annotations

import re

import pytest
from e2eclient import EventRecorder, Target

ASYNC_METHODS = ["celery", "rabbitmq"]
WORKER_PREFIX = {"celery": "celery@", "rabbitmq": "consumer@", "sync": "celery@"}


@pytest.mark.parametrize("method", ASYNC_METHODS)
def test_task_goes_pending_in_progress_done_live(target: Target, method: str) -> None:
    with EventRecorder(target.base_url) as live:
        resp = target.submit(method=method, duration=0.5)
        assert resp.status_code == 202, resp.text
        task = resp.json()
        assert task["status"] == "PENDING"
        assert task["method"] == method
        assert task["kind"] == "process_task"
        live.wait_for(task["id"], "DONE", timeout=30)
        # The new task is announced once the broker confirmed it; a worker's start that
        # was announced first makes the stream skip PENDING rather than go backwards
        # (events.py). On a busy machine that happens.
        assert live.statuses(task["id"]) in (
            ["PENDING", "IN_PROGRESS", "DONE"],
            ["IN_PROGRESS", "DONE"],
        )
    done = target.task(task["id"])
    assert done["worker"].startswith(WORKER_PREFIX[method])
    assert done["result"]["status"] == "success"
    assert done["result"]["task_num"] == task["num"]
    assert done["attempts"] == 1
    assert done["run_seconds"] >= 0.5
    assert done["started_at"] >= done["created_at"]
    assert done["finished_at"] >= done["started_at"]


def test_sync_returns_the_finished_task(target: Target) -> None:
    resp = target.submit(method="sync", duration=0.2)
    assert resp.status_code == 200, resp.text
    task = resp.json()
    assert task["status"] == "DONE"
    assert task["result"]["status"] == "success"
    assert task["worker"].startswith(WORKER_PREFIX["sync"])


def test_sync_answers_504_when_the_wait_ends_first(target: Target) -> None:
    resp = target.submit(method="sync", duration=3, wait=0.5)
    assert resp.status_code == 504, resp.text
    task = resp.json()
    assert task["status"] in ("PENDING", "IN_PROGRESS")
    assert target.wait_status(task["id"])["status"] == "DONE"


@pytest.mark.parametrize("method", [*ASYNC_METHODS, "sync"])
def test_process_data(target: Target, method: str) -> None:
    task = target.submit_ok(method=method, kind="process_data", numbers=[3, 1, 2, 10])
    done = target.wait_status(task["id"])
    assert done["status"] == "DONE", done
    result = done["result"]
    assert result["count"] == 4
    assert result["sum"] == 16
    assert result["mean"] == 4
    assert result["min"] == 1
    assert result["max"] == 10


def test_numbers_follow_submission_order(target: Target) -> None:
    nums = [target.submit_ok(method=m, duration=0)["num"] for m in ("celery", "rabbitmq") * 3]
    assert nums == sorted(nums)
    assert len(set(nums)) == len(nums)


@pytest.mark.parametrize("method", [*ASYNC_METHODS, "sync"])
def test_retries_then_done(target: Target, method: str) -> None:
    with EventRecorder(target.base_url) as live:
        task = target.submit_ok(method=method, duration=0, fail_times=2)
        done = target.wait_status(task["id"], timeout=30)
        live.wait_for(task["id"], "DONE")
        seen = live.statuses(task["id"])
    assert done["status"] == "DONE", done
    assert done["attempts"] == 3
    assert done["error"] is None
    assert seen.count("RETRYING") == 2, seen
    assert seen[-1] == "DONE"


@pytest.mark.parametrize("method", ASYNC_METHODS)
def test_retries_exhausted_is_failed(target: Target, method: str) -> None:
    task = target.submit_ok(method=method, duration=0, fail_times=10)
    done = target.wait_status(task["id"], timeout=30)
    assert done["status"] == "FAILED", done
    assert done["attempts"] == 4  # the first attempt and MAX_RETRIES=3 retries
    assert "simulated failure" in done["error"]


def test_worker_logs_name_the_task_number(target: Target) -> None:
    if target.stack is None:
        pytest.skip("reads the worker's log file of the local stack")
    task = target.submit_ok(method="celery", duration=0)
    target.wait_status(task["id"])
    log = target.stack.processes["celery-worker"].log_text()
    n = task["num"]
    assert re.search(rf"Celery Worker celery: Started processing task {n}\b", log)
    assert re.search(rf"Celery Worker celery: Task {n} finished successfully", log)


def test_the_guides_python_call_runs_untracked(target: Target) -> None:
    """The guide's own integration: ``process_task.delay(n, timeout, 'celery')`` and
    ``.get()`` from other code. The worker runs it (the api keeps no record of it, so
    without status reports) and the caller gets the guide's result over ``rpc://``."""
    if target.broker is None:
        pytest.skip("sends to the local broker")
    from celery import Celery

    app = Celery("guide", broker=target.broker.amqp_url, backend="rpc://", set_as_current=False)
    try:
        sent = app.send_task("process_task", args=(4242, 0.2, "celery"))
        result = sent.get(timeout=60)
    finally:
        app.close()
    assert result["status"] == "success"
    assert result["task_num"] == 4242
    assert result["slept"] >= 0.2
    assert target.http.get(f"/api/tasks/{sent.id}").status_code == 404


def test_the_guides_call_with_a_bad_argument_fails_at_once_with_the_reason(
    target: Target,
) -> None:
    """``process_task.delay(9, -1).get(timeout=30)`` waited the 30 s and raised a
    TimeoutError; the reason (a negative duration) was only in the worker's log."""
    if target.broker is None:
        pytest.skip("sends to the local broker")
    from celery import Celery

    app = Celery("guide", broker=target.broker.amqp_url, backend="rpc://", set_as_current=False)
    try:
        sent = app.send_task("process_task", args=(9, -1, "celery"))
        # (a caller left waiting would get a TimeoutError, which does not match)
        with pytest.raises(Exception, match=r"invalid task arguments.*duration"):
            sent.get(timeout=30)
    finally:
        app.close()


def test_a_second_local_worker_shows_online_under_its_own_name(target: Target) -> None:
    """The guide's "more workers", locally: ``celery ... worker -n w2@%h``. Its broker
    connection carries its node name, so the overview lists it online and apart."""
    if target.stack is None:
        pytest.skip("starts a worker process locally")
    import socket

    from tasklab_devtools.stack import celery_process
    from tasklab_devtools.waiting import wait_until

    worker = target.stack.add(
        celery_process(target.stack.cfg, name="celery-worker-2", concurrency=1, node_name="w2")
    )
    worker.start()
    name = f"w2@{socket.gethostname()}"

    def online() -> bool:
        workers = target.http.get("/api/overview").json()["workers"]
        return any(w["name"] == name and w["online"] for w in workers)

    try:
        wait_until(online, f"{name} online in the overview", 60, interval=0.5)
    finally:
        worker.terminate(30)
        target.stack.processes.pop(worker.name, None)
