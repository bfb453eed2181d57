"""Rollouts and pod deletions while tasks run: nothing accepted is lost or left
unfinished."""

from __future__ import annotations

import json
import time

from e2eclient import Target

from tasklab_devtools.cluster.build import repo_root
from tasklab_devtools.cluster.handle import NAMESPACE, RELEASE, Cluster
from tasklab_devtools.kube import Release

SERVICES = ["tasklab/api", "tasklab/celery-worker", "tasklab/consumer"]


def _submit_mix(target: Target, count: int, duration: float) -> list[dict[str, object]]:
    return [
        target.submit_ok(method=("celery", "rabbitmq")[i % 2], duration=duration)
        for i in range(count)
    ]


def _all_done(
    target: Target, tasks: list[dict[str, object]], timeout: float
) -> list[dict[str, object]]:
    deadline = time.monotonic() + timeout
    ended = []
    for task in tasks:
        # The api itself may be away for a moment (a rollout, a deleted pod).
        while True:
            try:
                ended.append(
                    target.wait_status(str(task["id"]), timeout=max(1, deadline - time.monotonic()))
                )
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(2)
    return ended


def _images(installed: Cluster) -> dict[str, set[str]]:
    pods = json.loads(installed.kubectl("-n", NAMESPACE, "get", "pods", "-o", "json").stdout)[
        "items"
    ]
    found: dict[str, set[str]] = {}
    for pod in pods:
        if pod["metadata"].get("deletionTimestamp"):
            continue
        component = pod["metadata"]["labels"].get("app.kubernetes.io/component", "")
        for container in pod["spec"]["containers"]:
            found.setdefault(component, set()).add(container["image"])
    return found


def test_helm_upgrade_to_a_new_image_tag_while_tasks_run(
    installed: Cluster, release: Release, target: Target
) -> None:
    old = installed.node.service_tag
    assert old is not None
    new = f"{old}-next"
    installed.retag_images(old, new, SERVICES)
    tasks = _submit_mix(target, 10, 4)
    installed.helm(
        "upgrade", RELEASE, str(repo_root() / "deploy" / "helm" / "tasklab"),
        "-n", NAMESPACE, "--reuse-values", "--set-string", f"image.tag={new}",
        "--wait", "--timeout", "10m", timeout=900,
    )  # fmt: skip
    release.wait_rollouts()
    images = _images(installed)
    for component in ("api", "celery-worker", "consumer", "celery-beat"):
        assert images[component] and all(i.endswith(f":{new}") for i in images[component]), images
    ended = _all_done(target, tasks, 300)
    assert [t["status"] for t in ended] == ["DONE"] * len(tasks), ended


def test_deleting_the_broker_pod_keeps_the_queued_tasks(
    installed: Cluster, release: Release, target: Target
) -> None:
    for deployment in ("celery-worker", "consumer"):
        installed.kubectl("-n", NAMESPACE, "scale", "deployment", deployment, "--replicas=0")
    installed.wait_for(
        "no workers",
        lambda: not release.pod_names("celery-worker") and not release.pod_names("consumer"),
    )
    tasks = _submit_mix(target, 8, 1)
    assert {target.task(str(t["id"]))["status"] for t in tasks} == {"PENDING"}
    installed.kubectl("-n", NAMESPACE, "delete", "pod", "rabbitmq-0", "--wait=true", timeout=300)
    release.wait_rollouts()
    for deployment in ("celery-worker", "consumer"):
        installed.kubectl("-n", NAMESPACE, "scale", "deployment", deployment, "--replicas=1")
    ended = _all_done(target, tasks, 300)
    assert [t["status"] for t in ended] == ["DONE"] * len(tasks), ended
    release.wait_rollouts()


def test_deleting_the_api_pod_mid_run_loses_nothing(
    installed: Cluster, release: Release, target: Target
) -> None:
    tasks = _submit_mix(target, 4, 8)
    for task in tasks:
        target.wait_status(str(task["id"]), {"IN_PROGRESS"}, timeout=60)
    (api_pod,) = release.pod_names("api")
    installed.kubectl("-n", NAMESPACE, "delete", "pod", api_pod, "--wait=false")
    installed.wait_for(
        "a new api pod", lambda: release.pod_names("api") not in ([], [api_pod]), 300
    )
    ended = _all_done(target, tasks, 300)
    assert [t["status"] for t in ended] == ["DONE"] * len(tasks), ended
