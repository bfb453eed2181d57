"""`make kind-up KEDA=1` on the real cluster: KEDA built from source scales celery-worker
on the depth of queue `celery`, and a scale-down never kills a running task.

The release is switched to `celeryWorker.autoscaling.mode=keda` (what make kind-up
KEDA=1 installs) with short windows a user may set (polling every 5 s, 30 s of lower
demand before pods go) so the test sees both directions in minutes; at the end it is
switched back to a fixed count.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from e2eclient import Target

from tasklab_devtools.cluster.handle import NAMESPACE, Cluster
from tasklab_devtools.kube import PAUSED_REPLICAS, Release

from .scaling import Batch, ready_pods, replicas, report

FAST = ["--set", "celeryWorker.autoscaling.scaleDownStabilizationSeconds=30",
        "--set", "celeryWorker.autoscaling.keda.pollingInterval=5"]  # fmt: skip


@pytest.fixture(scope="module")
def keda(installed: Cluster, release: Release) -> Cluster:
    installed.cli("up", "--keda", "--no-service-images", timeout=3600)
    installed.cli("install", "--keda", "--", *FAST, timeout=900)
    release.wait_rollouts()
    return installed


def _annotate(cluster: Cluster, value: str | None) -> None:
    pair = f"{PAUSED_REPLICAS}={value}" if value is not None else f"{PAUSED_REPLICAS}-"
    cluster.kubectl(
        "-n", NAMESPACE, "annotate", "scaledobject", "celery-worker", pair, "--overwrite"
    )


def test_a_backlog_scales_the_workers_up_and_an_empty_queue_down(
    keda: Cluster, target: Target, artifacts: Path
) -> None:
    assert ready_pods(keda, "celery-worker") and replicas(keda, "celery-worker") == 1
    began = time.monotonic()
    batch = Batch.submit(target, 20, method="celery", duration=10)  # 20 messages / 5 = 4 pods
    keda.wait_for("four worker pods", lambda: replicas(keda, "celery-worker") == 4, 180)
    scaled = time.monotonic() - began
    keda.wait_for(
        "four Ready worker pods", lambda: len(ready_pods(keda, "celery-worker")) == 4, 240
    )
    ready = time.monotonic() - began
    pods = set(ready_pods(keda, "celery-worker"))

    def every_pod_took_a_task() -> bool:
        workers = {
            t["worker"]
            for t in target.http.get("/api/tasks", params={"limit": 100}).json()["items"]
        }
        return {f"celery@{p}" for p in pods} <= workers

    keda.wait_for("the added pods taking tasks", every_pod_took_a_task, 240)
    taking = time.monotonic() - began
    ended = batch.wait_final(300)
    assert [t["status"] for t in ended] == ["DONE"] * 20
    drained = time.monotonic() - began
    keda.wait_for(
        "a scale-down once the queue is empty", lambda: replicas(keda, "celery-worker") < 4, 300
    )
    down = time.monotonic() - began
    report(artifacts, "KEDA: a backlog of 20 tasks of 10 s (1 → 4 pods)", {
        "replicas set to 4 after": f"{scaled:.0f} s",
        "four pods Ready after": f"{ready:.0f} s",
        "every added pod taking tasks after": f"{taking:.0f} s",
        "all 20 DONE after": f"{drained:.0f} s",
        "first pod removed after (30 s of empty queue, then 1 pod per minute)": f"{down:.0f} s",
    })  # fmt: skip


def test_kubectl_get_hpa_shows_the_hpa_keda_made(keda: Cluster) -> None:
    listed = json.loads(keda.kubectl("-n", NAMESPACE, "get", "hpa", "-o", "json").stdout)["items"]
    (hpa,) = listed
    assert hpa["metadata"]["name"] == "celery-worker"
    assert hpa["spec"]["scaleTargetRef"]["name"] == "celery-worker"
    owners = {(o["kind"], o["name"]) for o in hpa["metadata"].get("ownerReferences", [])}
    assert ("ScaledObject", "celery-worker") in owners
    assert hpa["spec"]["metrics"][0]["type"] == "External"


def test_pausing_keda_holds_the_count_and_kubectl_scale(keda: Cluster) -> None:
    _annotate(keda, "3")
    try:
        keda.wait_for(
            "three pods while paused", lambda: len(ready_pods(keda, "celery-worker")) == 3, 240
        )
        time.sleep(20)  # four polling intervals with an empty queue: nothing scales it down
        assert replicas(keda, "celery-worker") == 3
        keda.kubectl("-n", NAMESPACE, "scale", "deployment", "celery-worker", "--replicas=2")
        time.sleep(20)
        assert replicas(keda, "celery-worker") == 2, "kubectl scale was undone while paused"
    finally:
        _annotate(keda, None)
    keda.wait_for(
        "KEDA's HPA back",
        lambda: "celery-worker" in keda.kubectl("-n", NAMESPACE, "get", "hpa").stdout,
        120,
    )


def test_a_keda_scale_down_lets_running_tasks_finish(
    keda: Cluster, target: Target, artifacts: Path
) -> None:
    _annotate(keda, "3")
    try:
        keda.wait_for("three Ready pods", lambda: len(ready_pods(keda, "celery-worker")) == 3, 240)
        batch = Batch.submit(target, 9, method="celery", duration=20)  # 3 per pod
        batch.wait_running()
        assert len(set(batch.started_on.values())) == 3, batch.started_on
        began = time.monotonic()
        _annotate(keda, "1")  # KEDA scales the Deployment to 1 while the 9 run
        keda.wait_for("one pod left", lambda: replicas(keda, "celery-worker") == 1, 120)
        ended = batch.wait_final(300)
        figures = batch.figures(ended)
        keda.wait_for("one Ready pod", lambda: len(ready_pods(keda, "celery-worker")) == 1, 240)
        took = time.monotonic() - began
    finally:
        _annotate(keda, None)
    report(
        artifacts,
        "KEDA: 3 → 1 pods with 9 tasks of 20 s running",
        {**figures, "scale-down done after": f"{took:.0f} s"},
    )
    assert figures == {"tasks": 9, "lost": 0, "failed": 0, "run again": 0, "attempts 2": 0}, figures
