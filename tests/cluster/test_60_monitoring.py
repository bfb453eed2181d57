"""Monitoring on the real cluster, as make kind-up has it: the Prometheus Operator runs a
Prometheus that selects every ServiceMonitor and PrometheusRule (the chart's, rendered
because the operator's CRDs are there) and kube-state-metrics
(tasklab_devtools.cluster.monitoring); after a mixed workload with KEDA owning the
workers: every target up, the rules loaded, every dashboard query answered (the
replicas panel included), the queue depth equal to the broker's, and
TasklabMessagesWithoutConsumer firing while no consumer runs."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from e2eclient import Target

from tasklab_devtools.cluster.handle import NAMESPACE, Cluster
from tasklab_devtools.kube import Release

from .scaling import report

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = sorted((ROOT / "deploy" / "helm" / "tasklab" / "dashboards").glob("*.json"))


@pytest.fixture(scope="module")
def prometheus(installed: Cluster, release: Release, target: Target) -> Iterator[str]:
    installed.cli("up", "--keda", "--monitoring", "--no-service-images", timeout=3600)
    # (documented values, shorter than their defaults so that the checks take seconds:
    # the alert's wait, the api's and the broker's scrape intervals)
    installed.cli(
        "install", "--monitoring", "--keda",
        "--", "--set", "monitoring.rules.withoutConsumerFor=20s",
        "--set", "monitoring.interval=10s",
        "--set", "rabbitmq.metrics.serviceMonitor.interval=10s",
        timeout=900,
    )  # fmt: skip
    release.wait_rollouts()
    url = f"http://127.0.0.1:{installed.host_port(30090)}"
    installed.wait_for("Prometheus ready", lambda: _ok(f"{url}/-/ready"), 180)
    _workload(target)
    yield url
    installed.kubectl("delete", "namespace", "monitoring", "--wait=false")


def _ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def _workload(target: Target) -> None:
    """Every method and kind, a retry, a failure, a cancel, and a refused submission (the
    api's errors panel counts 4xx answers: the reinstall above started a fresh api pod)."""
    refused = target.submit(method="celery", duration=-1)
    assert refused.status_code == 422, refused.text
    bodies: list[dict[str, Any]] = [
        {"method": "celery", "duration": 1},
        {"method": "rabbitmq", "duration": 1},
        {"method": "sync", "duration": 0.5},
        {"method": "celery", "kind": "process_data", "numbers": [1, 2, 3]},
        {"method": "rabbitmq", "kind": "process_data", "numbers": [4, 5]},
        {"method": "celery", "duration": 0.2, "fail_times": 1},
        {"method": "rabbitmq", "duration": 0.2, "fail_times": 9},
    ]
    tasks = [target.submit_ok(**b) for b in bodies]
    slow = target.submit_ok(method="celery", duration=30)
    target.wait_status(slow["id"], {"IN_PROGRESS"}, timeout=60)
    target.http.post(f"/api/tasks/{slow['id']}/cancel")
    for task in tasks:
        target.wait_status(task["id"], timeout=120)


def _query(url: str, expr: str) -> list[dict[str, Any]]:
    answer = httpx.get(f"{url}/api/v1/query", params={"query": expr}, timeout=20).json()
    assert answer["status"] == "success", (expr, answer)
    result: list[dict[str, Any]] = answer["data"]["result"]
    return result


def _wait_query(url: str, expr: str, timeout: float = 120) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while not (result := _query(url, expr)) and time.monotonic() < deadline:
        time.sleep(5)
    return result


def test_every_target_is_up(prometheus: str) -> None:
    expected = {
        ("api", ""): "up",
        ("rabbitmq", "aggregated"): "up",
        ("rabbitmq", "detailed"): "up",
        ("kube-state-metrics", ""): "up",
    }
    # The operator turns the chart's new ServiceMonitors into configuration, and its
    # reloader has Prometheus load it, some seconds after the install.
    deadline = time.monotonic() + 180
    while True:
        targets = httpx.get(f"{prometheus}/api/v1/targets", timeout=10).json()["data"][
            "activeTargets"
        ]
        health = {(t["labels"]["job"], t["labels"].get("scrape", "")): t["health"] for t in targets}
        if health == expected or time.monotonic() > deadline:
            break
        time.sleep(5)
    assert health == expected


def test_the_rules_are_loaded(prometheus: str) -> None:
    groups = httpx.get(f"{prometheus}/api/v1/rules", timeout=10).json()["data"]["groups"]
    names = {r["name"] for g in groups for r in g["rules"]}
    assert {"TasklabApiDown", "TasklabMessagesWithoutConsumer", "TasklabDeadLetters"} <= names
    assert all(r["health"] == "ok" for g in groups for r in g["rules"]), groups


def _panel_queries() -> list[tuple[str, str, str]]:
    found = []
    for path in DASHBOARDS:
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel.get("targets", []):
                found.append((path.stem, panel["title"], target["expr"]))
    return found


def test_every_dashboard_query_returns_data(prometheus: str, artifacts: Path) -> None:
    _wait_query(prometheus, 'tasklab_tasks_finished_total{namespace="tasklab"}')
    time.sleep(35)  # a second scrape of every target: rates need two points
    empty = []
    for board, title, expr in _panel_queries():
        concrete = expr.replace("$namespace", NAMESPACE).replace("$__rate_interval", "5m")
        if not _wait_query(prometheus, concrete, timeout=60):
            empty.append(f"{board} / {title}: {concrete}")
    report(artifacts, "Monitoring on the cluster: dashboard queries", {
        "queries": len(_panel_queries()),
        "without data": len(empty),
    })  # fmt: skip
    assert not empty, "\n".join(empty)


def test_the_queue_depth_prometheus_reports_is_the_brokers(
    prometheus: str, installed: Cluster, release: Release, target: Target
) -> None:
    installed.kubectl("-n", NAMESPACE, "scale", "deployment", "consumer", "--replicas=0")

    # Not even a terminating one: until it exits, it may still take the messages.
    installed.wait_for("no consumer pod", lambda: not release.pods("consumer"), 180)
    tasks = [target.submit_ok(method="rabbitmq", duration=0) for _ in range(3)]
    user = release.secret_value("rabbitmq", "username")
    password = release.secret_value("rabbitmq", "password")
    queue: dict[str, Any] = {}
    with installed.port_forward("service/rabbitmq", 15672, NAMESPACE) as url:

        def waiting() -> bool:
            # (the management API's figures are refreshed every few seconds)
            queue.update(
                httpx.get(
                    f"{url}/api/queues/%2F/direct_tasks", auth=(user, password), timeout=10
                ).json()
            )
            return int(queue.get("messages_ready", 0)) >= 3

        installed.wait_for("the broker counting the 3 messages", waiting, 60)
    expr = 'sum(rabbitmq_detailed_queue_messages_ready{namespace="tasklab", queue="direct_tasks"})'
    deadline = time.monotonic() + 120
    while True:
        result = _query(prometheus, expr)
        shown = int(float(result[0]["value"][1])) if result else -1
        if shown == queue["messages_ready"] or time.monotonic() > deadline:
            break
        time.sleep(5)
    assert shown == queue["messages_ready"]
    # No consumer, messages waiting: the alert fires after its 20 s...
    alert = (
        'ALERTS{alertname="TasklabMessagesWithoutConsumer", alertstate="firing",'
        ' queue="direct_tasks"}'
    )
    assert _wait_query(prometheus, alert, timeout=240), "TasklabMessagesWithoutConsumer never fired"
    # ... and resolves once a consumer takes the queue again.
    installed.kubectl("-n", NAMESPACE, "scale", "deployment", "consumer", "--replicas=1")
    for task in tasks:
        target.wait_status(task["id"], timeout=120)
    deadline = time.monotonic() + 180
    while _query(prometheus, alert) and time.monotonic() < deadline:
        time.sleep(5)
    assert not _query(prometheus, alert), "the alert did not resolve"
