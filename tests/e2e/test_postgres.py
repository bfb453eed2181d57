"""Two api processes sharing one PostgreSQL database.

The workers report to api B only; submissions go to api A. A's sync waits and live
stream still see every change (PostgreSQL LISTEN/NOTIFY), and both apis number tasks
from one sequence.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from e2eclient import EventRecorder, Target

from tasklab_devtools.pg import temp_database
from tasklab_devtools.procs import free_port, wait_http_ok
from tasklab_devtools.rabbitmq import RabbitNode
from tasklab_devtools.stack import (
    LocalStack,
    StackConfig,
    api_process,
    celery_process,
    consumer_process,
)

pytestmark = pytest.mark.postgres

VHOST = "pg-e2e"


@pytest.fixture(scope="module")
def two_apis(broker: RabbitNode, artifacts: Path) -> Iterator[tuple[Target, Target]]:
    # A vhost of its own, so the session stack's workers never see these tasks.
    with broker.vhost(VHOST) as rmq_url, temp_database() as db_url:
        cfg_a = StackConfig(
            rmq_url=rmq_url,
            database_url=db_url,
            callback_secret=secrets.token_urlsafe(32),
            api_port=free_port(),
            log_dir=artifacts / "logs-postgres",
            celery_concurrency=2,
            consumer_concurrency=2,
        )
        cfg_b = replace(cfg_a, api_port=free_port())
        stack = LocalStack(cfg_a)
        stack.add(api_process(cfg_a, name="api-a"))
        stack.add(api_process(cfg_b, name="api-b"))
        stack.add(celery_process(cfg_b))
        stack.add(consumer_process(cfg_b))
        try:
            stack.start(api=False, celery=False, consumer=False)
            for cfg in (cfg_a, cfg_b):
                wait_http_ok(f"{cfg.api_base_url}/readyz", 60)
            yield (
                Target(base_url=cfg_a.api_base_url, secret=cfg_a.callback_secret),
                Target(base_url=cfg_b.api_base_url, secret=cfg_b.callback_secret),
            )
        finally:
            stack.stop()


def test_sync_on_a_finishes_through_callbacks_on_b(two_apis: tuple[Target, Target]) -> None:
    a, _ = two_apis
    resp = a.submit(method="sync", duration=0.2)
    assert resp.status_code == 200, resp.text
    assert resp.json()["status"] == "DONE"


@pytest.mark.parametrize("method", ["celery", "rabbitmq"])
def test_live_stream_of_a_shows_changes_made_on_b(
    two_apis: tuple[Target, Target], method: str
) -> None:
    a, b = two_apis
    with EventRecorder(a.base_url) as live:
        task = b.submit_ok(method=method, duration=0.2)
        live.wait_for(task["id"], "DONE", timeout=30)
        seen = live.statuses(task["id"])
    # A notification carries the task's state when it is read, so a quick task may
    # skip PENDING; what is seen never goes backwards.
    order = ["PENDING", "IN_PROGRESS", "DONE"]
    assert [order.index(s) for s in seen] == sorted(order.index(s) for s in seen), seen
    assert a.task(task["id"])["status"] == "DONE"


def test_one_numbering_across_apis(two_apis: tuple[Target, Target]) -> None:
    a, b = two_apis
    nums = [t.submit_ok(method="celery", duration=0)["num"] for t in (a, b, a, b)]
    assert nums == sorted(nums)
    assert len(set(nums)) == 4


def _finished(target: Target) -> float:
    total = 0.0
    for line in target.http.get("/metrics").text.splitlines():
        if line.startswith("tasklab_tasks_finished_total{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_metrics_add_up_across_apis(two_apis: tuple[Target, Target]) -> None:
    """Each final status is counted once, by the api that took its callback."""
    a, b = two_apis
    busy: dict[str, list[str] | int] = {
        "status": ["PENDING", "IN_PROGRESS", "RETRYING"],
        "limit": 1,
    }
    deadline = time.monotonic() + 30
    while a.http.get("/api/tasks", params=busy).json()["total"]:  # earlier tests' tasks
        assert time.monotonic() < deadline
        time.sleep(0.1)
    before = _finished(a) + _finished(b)
    tasks = [t.submit_ok(method=m, duration=0) for t in (a, b) for m in ("celery", "rabbitmq")]
    for task in tasks:
        a.wait_status(task["id"])
    assert _finished(a) + _finished(b) == before + len(tasks)
