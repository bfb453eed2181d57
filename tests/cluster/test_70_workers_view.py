"""The cluster in the product: the api reads the worker Deployments with the official
`kubernetes` client (its own ServiceAccount and a namespaced Role) and the UI shows
them beside the Celery workers; with `api.kubernetes.scaleFromUi` the UI scales them,
refused while an autoscaler owns the count, and refused by default."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from e2eclient import Target
from playwright.sync_api import Browser, expect

from tasklab_devtools.browser import chromium
from tasklab_devtools.cluster.handle import NAMESPACE, Cluster
from tasklab_devtools.kube import Release

from .scaling import ready_pods, replicas


@pytest.fixture(scope="module", autouse=True)
def _plain_install(installed: Cluster, release: Release) -> None:
    """make kind-up's install as it is: no autoscaler (the module before used KEDA)."""
    installed.cli("install", timeout=900)
    release.wait_rollouts()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as b:
        yield b


def _view(target: Target) -> dict[str, Any]:
    answer = target.http.get("/api/cluster")
    assert answer.status_code == 200, answer.text
    view: dict[str, Any] = answer.json()
    return view


def test_the_view_matches_kubectl(installed: Cluster, release: Release, target: Target) -> None:
    view = _view(target)
    assert view["available"] is True, view
    assert view["namespace"] == NAMESPACE and view["scale_from_ui"] is False
    shown = {w["name"]: w for w in view["workloads"]}
    assert set(shown) == {"celery-worker", "consumer"}
    for name, workload in shown.items():
        deployment = json.loads(
            installed.kubectl("-n", NAMESPACE, "get", "deployment", name, "-o", "json").stdout
        )
        assert workload["desired"] == deployment["spec"]["replicas"]
        assert workload["ready"] == deployment["status"].get("readyReplicas", 0)
        assert sorted(p["name"] for p in workload["pods"] if not p["terminating"]) == ready_pods(
            installed, name
        )
        assert all(p["phase"] == "Running" and p["ready"] for p in workload["pods"])
        assert workload["autoscaler"] is None


def test_scaling_is_refused_while_the_switch_is_off(
    installed: Cluster, release: Release, target: Target
) -> None:
    answer = target.http.post("/api/cluster/workloads/celery-worker/scale", json={"replicas": 2})
    assert answer.status_code == 403, answer.text
    assert "scaleFromUi" in answer.json()["detail"]
    assert replicas(installed, "celery-worker") == 1
    bad = target.http.post("/api/cluster/workloads/api/scale", json={"replicas": 2})
    assert bad.status_code in (403, 404), bad.text
    invalid = target.http.post("/api/cluster/workloads/consumer/scale", json={"replicas": -1})
    assert invalid.status_code == 422


def test_the_ui_control_scales_the_workers_when_allowed(
    installed: Cluster, release: Release, target: Target, browser: Browser
) -> None:
    installed.cli("install", "--", "--set", "api.kubernetes.scaleFromUi=true", timeout=900)
    release.wait_rollouts()
    try:
        page = browser.new_page(base_url=target.base_url)
        page.goto("/")
        row = page.locator('.workload[data-workload="celery-worker"]')
        expect(row).to_contain_text("1 of 1 ready", timeout=30_000)
        row.get_by_role("button", name="One pod more: celery-worker").click()
        installed.wait_for(
            "two worker pods", lambda: len(ready_pods(installed, "celery-worker")) == 2
        )
        expect(row).to_contain_text("2 of 2 ready", timeout=30_000)
        expect(row.locator(".pods li")).to_have_count(2, timeout=30_000)
        row.get_by_role("button", name="One pod fewer: celery-worker").click()
        installed.wait_for("one worker pod", lambda: replicas(installed, "celery-worker") == 1)
        page.close()
    finally:
        installed.cli("install", timeout=900)
        release.wait_rollouts()
    # (wait_rollouts waited for the api behind the NodePort and dropped old connections.)
    assert _view(target)["scale_from_ui"] is False
