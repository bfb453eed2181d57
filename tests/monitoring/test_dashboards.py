"""The Grafana dashboards shipped by the chart: valid, and every query answered.

A mixed workload (all methods, both kinds, a retry, a failure, a cancel, bad input)
runs against the real stack; a real Prometheus scrapes the api and the broker; then
every panel query of every dashboard is parsed and evaluated, and must return data.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import httpx
import promql_parser
import pytest
from grafana_foundation_sdk.models.dashboard import Dashboard, Panel

from tasklab_devtools.prometheus import LOCAL_NAMESPACE, LocalPrometheus
from tasklab_devtools.stack import StackConfig

DASHBOARDS = sorted(Path("deploy/helm/tasklab/dashboards").glob("*.json"))
#: Metrics only a cluster has (kube-state-metrics): parsed here, evaluated on a cluster.
CLUSTER_ONLY = re.compile(r"\bkube_\w+")


def _load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def _targets() -> list[tuple[str, str, str]]:
    out = []
    for path in DASHBOARDS:
        for panel in _load(path)["panels"]:
            for target in panel.get("targets", []):
                out.append((path.stem, panel["title"], target["expr"]))
    return out


def _concrete(expr: str) -> str:
    """A panel query as Grafana would send it for this namespace."""
    return expr.replace("$namespace", LOCAL_NAMESPACE).replace("$__rate_interval", "5m")


def _missing_keys(given: Any, typed: Any, path: str = "") -> list[str]:
    """Keys of ``given`` that the typed model dropped (unknown or misspelled)."""
    if isinstance(given, dict) and isinstance(typed, dict):
        missing = [f"{path}.{k}" for k in given if k not in typed]
        for k in given:
            if k in typed and k not in ("options", "fieldConfig", "custom"):
                missing += _missing_keys(given[k], typed[k], f"{path}.{k}")
        return missing
    if isinstance(given, list) and isinstance(typed, list):
        return [m for g, t in zip(given, typed, strict=False) for m in _missing_keys(g, t, path)]
    return []


def test_there_are_dashboards() -> None:
    assert {p.stem for p in DASHBOARDS} >= {"tasklab-overview", "tasklab-broker"}


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_dashboard_fits_grafanas_model(path: Path) -> None:
    data = _load(path)
    typed = Dashboard.from_json(data).to_json()
    top = {k: v for k, v in data.items() if k != "panels"}
    assert _missing_keys(top, typed) == []
    for panel in data["panels"]:
        assert _missing_keys(panel, Panel.from_json(panel).to_json()) == [], panel["title"]
    assert data["schemaVersion"] >= 39
    assert {v["name"] for v in data["templating"]["list"]} == {"datasource", "namespace"}


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_grid_and_ids(path: Path) -> None:
    panels = _load(path)["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for p in panels:
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24, p["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{p['title']} overlaps another panel"
                cells.add((x, y))
        assert p["datasource"]["uid"] == "${datasource}"
        assert p.get("description"), f"{p['title']} says what question it answers"
        for t in p["targets"]:
            assert 'namespace=~"$namespace"' in t["expr"], (p["title"], t["expr"])


@pytest.mark.parametrize(("dashboard", "title", "expr"), _targets())
def test_every_query_parses(dashboard: str, title: str, expr: str) -> None:
    promql_parser.parse(_concrete(expr))


def _workload(api: httpx.Client) -> None:
    ids = [
        api.post("/api/tasks", json=body).json()["id"]
        for body in (
            {"method": "celery", "duration": 0.2},
            {"method": "rabbitmq", "duration": 0.2},
            {"method": "celery", "kind": "process_data", "numbers": [1, 2, 3]},
            {"method": "rabbitmq", "duration": 0, "fail_times": 1},
            {"method": "celery", "duration": 0, "fail_times": 5},
            {"method": "rabbitmq", "duration": 0, "fail_times": 5},
        )
    ]
    assert api.post("/api/tasks", json={"method": "sync", "duration": 0}).status_code == 200
    assert api.post("/api/tasks", json={"method": "celery", "duration": -1}).status_code == 422
    long = api.post("/api/tasks", json={"method": "celery", "duration": 30}).json()["id"]
    for task_id in ids:
        deadline = time.monotonic() + 60
        while api.get(f"/api/tasks/{task_id}").json()["status"] not in ("DONE", "FAILED"):
            assert time.monotonic() < deadline
            time.sleep(0.2)
    assert api.post(f"/api/tasks/{long}/cancel").status_code == 200


@pytest.fixture(scope="module")
def loaded(mon_stack: StackConfig, prometheus: LocalPrometheus) -> LocalPrometheus:
    with httpx.Client(base_url=mon_stack.api_base_url, timeout=60) as api:
        _workload(api)
    time.sleep(4)  # a few scrapes after the last change
    return prometheus


@pytest.mark.parametrize(("dashboard", "title", "expr"), _targets())
def test_every_query_returns_data(
    loaded: LocalPrometheus, dashboard: str, title: str, expr: str
) -> None:
    if CLUSTER_ONLY.search(expr):
        pytest.skip("kube-state-metrics series exist only on a cluster")
    assert loaded.query(_concrete(expr)), f"{dashboard} / {title}: no data for {expr}"


def test_template_variables_find_the_namespace(loaded: LocalPrometheus) -> None:
    for path in DASHBOARDS:
        for var in _load(path)["templating"]["list"]:
            if var["type"] != "query":
                continue
            metric = re.fullmatch(r"label_values\((\w+), namespace\)", var["definition"])
            assert metric, var["definition"]
            values = {r["metric"].get("namespace") for r in loaded.query(metric.group(1))}
            assert LOCAL_NAMESPACE in values, (path.stem, values)


def test_celery_exporter_names_for_public_dashboards(loaded: LocalPrometheus) -> None:
    """The community celery-exporter's metric names carry the Celery path's events."""
    for expr in (
        "sum(celery_task_sent_total)",
        "sum(celery_task_started_total)",
        "sum(celery_task_succeeded_total)",
        "sum(celery_task_failed_total)",
        "sum(celery_task_retried_total)",
        "sum(celery_task_revoked_total)",
        "sum(celery_task_runtime_count)",
        "max(celery_worker_up)",
        "max(celery_queue_length)",
        "max(celery_active_consumer_count)",
    ):
        result = loaded.query(expr)
        assert result, expr
        if expr != "max(celery_queue_length)":
            assert float(result[0]["value"][1]) > 0, expr
