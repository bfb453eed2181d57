"""Metrics against a real Prometheus scraping the real stack."""

from __future__ import annotations

import time

import httpx

from tasklab_devtools.prometheus import LocalPrometheus
from tasklab_devtools.rabbitmq import RabbitNode
from tasklab_devtools.stack import StackConfig


def _value(prom: LocalPrometheus, expr: str) -> float:
    result = prom.query(expr)
    assert result, f"no data for {expr}"
    return float(result[0]["value"][1])


def _wait_value(prom: LocalPrometheus, expr: str, want: float, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while True:
        result = prom.query(expr)
        got = float(result[0]["value"][1]) if result else None
        if got == want:
            return
        if time.monotonic() >= deadline:
            up = prom.query("tasklab_broker_stats_up")
            stats = up[0]["value"][1] if up else None
            raise AssertionError(f"{expr} = {got}, want {want} (tasklab_broker_stats_up {stats})")
        time.sleep(0.5)


def _broker_truth(node: RabbitNode, queue: str) -> tuple[int, int]:
    """Ready and unacked messages as the broker itself counts them right now."""
    out = node.rabbitmqctl(
        "list_queues",
        "-q",
        "--no-table-headers",
        "name",
        "messages_ready",
        "messages_unacknowledged",
    )
    for line in out.splitlines():
        name, ready, unacked = line.split()
        if name == queue:
            return int(ready), int(unacked)
    raise AssertionError(f"no queue {queue}: {out}")


def test_queue_depth_matches_the_broker_within_one_scrape(
    mon_stack: StackConfig, mon_broker: RabbitNode, prometheus: LocalPrometheus
) -> None:
    api = httpx.Client(base_url=mon_stack.api_base_url, timeout=30)
    ids = [
        api.post("/api/tasks", json={"method": "celery", "duration": 20}).json()["id"]
        for _ in range(5)
    ]
    # Three worker slots run three tasks, two wait: ready 2, unacked 3.
    deadline = time.monotonic() + 20
    while _broker_truth(mon_broker, "celery") != (2, 3):
        assert time.monotonic() < deadline, _broker_truth(mon_broker, "celery")
        time.sleep(0.2)
    mon_broker.wait_queue_counts("celery", 2, 3, timeout=15)  # the management API's lag
    for state, want in (("ready", 2), ("unacked", 3)):
        _wait_value(
            prometheus, f'tasklab_queue_messages{{queue="celery",state="{state}"}}', want, 2.5
        )
    _wait_value(prometheus, 'rabbitmq_detailed_queue_messages_ready{queue="celery"}', 2, 2.5)
    _wait_value(prometheus, 'rabbitmq_detailed_queue_messages_unacked{queue="celery"}', 3, 2.5)
    # (not a depth: no scrape bound; a scrape whose read of the management API failed, its
    # 3 s passed on a loaded machine, has none of the broker's series: seen in CI)
    _wait_value(prometheus, 'tasklab_queue_consumers{queue="celery"}', 1, 15)
    for task_id in ids:
        assert api.post(f"/api/tasks/{task_id}/cancel").status_code == 200
    _wait_value(prometheus, 'tasklab_queue_messages{queue="celery",state="ready"}', 0, 20)
    _wait_value(prometheus, 'tasklab_queue_messages{queue="celery",state="unacked"}', 0, 20)
