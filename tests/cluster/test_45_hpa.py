"""`celeryWorker.autoscaling.mode=hpa` on the real HPA controller, with metrics-server
(built from source) measuring the pods' CPU: a stream of `process_data` work scales the
workers up, and they come back down once it stops."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
from e2eclient import Target

from tasklab_devtools.cluster.handle import NAMESPACE, Cluster
from tasklab_devtools.kube import Release

from .scaling import ready_pods, replicas, report

NUMBERS = [float(i % 997) for i in range(10_000)]  # the most process_data takes


@pytest.fixture(scope="module")
def hpa(installed: Cluster, release: Release) -> Cluster:
    installed.cli("up", "--metrics-server", "--no-service-images", timeout=3600)
    installed.cli(
        "install", "--",
        "--set", "celeryWorker.autoscaling.mode=hpa",
        "--set", "celeryWorker.autoscaling.scaleDownStabilizationSeconds=30",
        "--set", "celeryWorker.autoscaling.hpa.cpuUtilization=50",
        # (and the workers view's scaling on: refused while the HPA owns the count)
        "--set", "api.kubernetes.scaleFromUi=true",
        timeout=900,
    )  # fmt: skip
    release.wait_rollouts()
    return installed


def _cpu_known(cluster: Cluster) -> bool:
    done = cluster.kubectl("-n", NAMESPACE, "get", "hpa", "celery-worker", "-o", "json")
    metrics = json.loads(done.stdout)["status"].get("currentMetrics") or []
    return any(
        m.get("resource", {}).get("current", {}).get("averageUtilization") is not None
        for m in metrics
    )


def test_cpu_work_scales_the_workers_up_and_back_down(
    hpa: Cluster, target: Target, artifacts: Path
) -> None:
    hpa.wait_for("metrics-server's CPU figures in the HPA", lambda: _cpu_known(hpa), 240)
    assert replicas(hpa, "celery-worker") == 1
    stop = threading.Event()
    sent = [0]

    def load() -> None:
        while not stop.is_set():
            target.submit_ok(method="celery", kind="process_data", numbers=NUMBERS)
            sent[0] += 1

    threads = [threading.Thread(target=load, daemon=True) for _ in range(4)]
    began = time.monotonic()
    for thread in threads:
        thread.start()
    try:
        hpa.wait_for("more than one worker pod", lambda: replicas(hpa, "celery-worker") > 1, 300)
        up = time.monotonic() - began
        most = replicas(hpa, "celery-worker")
        hpa.wait_for(
            "the added pods Ready",
            lambda: len(ready_pods(hpa, "celery-worker")) == replicas(hpa, "celery-worker"),
            240,
        )
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    stopped = time.monotonic()
    hpa.wait_for("a scale-down after the load", lambda: replicas(hpa, "celery-worker") < most, 420)
    down = time.monotonic() - stopped
    report(artifacts, "HPA on CPU (metrics-server): process_data of 10,000 numbers, 4 clients", {
        "tasks sent": sent[0],
        "scaled above 1 pod after": f"{up:.0f} s (to {most})",
        "first pod removed after the load stopped": f"{down:.0f} s",
    })  # fmt: skip


def test_the_workers_view_refuses_to_scale_what_the_hpa_owns(hpa: Cluster, target: Target) -> None:
    view = target.http.get("/api/cluster").json()
    (worker,) = [w for w in view["workloads"] if w["name"] == "celery-worker"]
    assert worker["autoscaler"]["kind"] == "HorizontalPodAutoscaler", worker
    assert worker["autoscaler"]["name"] == "celery-worker"
    answer = target.http.post("/api/cluster/workloads/celery-worker/scale", json={"replicas": 3})
    assert answer.status_code == 409, answer.text
    assert "owns the replica count" in answer.json()["detail"]
    # The consumer has no autoscaler: the UI may scale it (and back).
    for count in (2, 1):
        scaled = target.http.post("/api/cluster/workloads/consumer/scale", json={"replicas": count})
        assert scaled.status_code == 200, scaled.text
        hpa.wait_for(
            f"{count} consumer pods", lambda n=count: len(ready_pods(hpa, "consumer")) == n
        )
