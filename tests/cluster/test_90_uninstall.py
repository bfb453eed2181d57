"""`helm uninstall` leaves what the README says stays: the broker's volume and Secret;
and it does not wait on the workers' long grace period when tasks are still running."""

from __future__ import annotations

import json
import time
from typing import Any

from e2eclient import Target

from tasklab_devtools.cluster.handle import NAMESPACE, RELEASE, Cluster
from tasklab_devtools.kube import Release

#: A stopping worker whose report finds no api retries it CALLBACK_STOPPING_WAIT (30 s),
#: waits REQUEUE_DELAY (5 s) and exits (a Celery worker whose stop then hangs: STOP_LINGER,
#: 30 s, later); the api's own grace is 40 s, the broker's 120 s.
PODS_GONE_WITHIN = 150


def _pods(installed: Cluster) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = json.loads(
        installed.kubectl("-n", NAMESPACE, "get", "pods", "-o", "json").stdout
    )["items"]
    return items


def _left_behind(installed: Cluster, pods: list[dict[str, Any]]) -> str:
    """The pods still there, each with its state and its last log lines."""
    lines = []
    for pod in pods:
        name = pod["metadata"]["name"]
        states = [
            next(iter(c.get("state", {})), "?") for c in pod["status"].get("containerStatuses", [])
        ]
        lines.append(
            f"{name}: {pod['status'].get('phase')}, containers {states}, deletion "
            f"{pod['metadata'].get('deletionTimestamp')}"
        )
        logs = installed.kubectl("-n", NAMESPACE, "logs", name, "--tail=15", check=False)
        lines += [f"  | {line}" for line in (logs.stdout + logs.stderr).splitlines()]
    return "\n".join(lines)


def test_helm_uninstall_leaves_only_the_brokers_volume_and_secret(
    installed: Cluster, release: Release, target: Target
) -> None:
    # Tasks still running at the uninstall: each worker finishes or drops its task, finds
    # no api to report to, and exits within its stopping wait, not its grace (65 min).
    running = [target.submit_ok(method=m, duration=60) for m in ("celery", "rabbitmq")]
    for task in running:
        target.wait_status(task["id"], {"IN_PROGRESS"}, timeout=60)
    began = time.monotonic()
    installed.helm("uninstall", RELEASE, "-n", NAMESPACE, "--wait", "--timeout", "5m", timeout=400)
    try:
        installed.wait_for(
            "every pod gone",
            lambda: not _pods(installed),
            PODS_GONE_WITHIN - (time.monotonic() - began),
        )
    except AssertionError as missed:
        raise AssertionError(f"{missed}:\n{_left_behind(installed, _pods(installed))}") from None
    left = json.loads(
        installed.kubectl(
            "-n",
            NAMESPACE,
            "get",
            "all,pvc,secret,configmap,networkpolicy,serviceaccount,role,rolebinding",
            "-o",
            "json",
        ).stdout
    )["items"]
    names = sorted(f"{o['kind']}/{o['metadata']['name']}" for o in left)
    expected = sorted(
        [
            "PersistentVolumeClaim/data-rabbitmq-0",
            "Secret/rabbitmq",
            "ConfigMap/kube-root-ca.crt",
            "ServiceAccount/default",
        ]
    )
    assert names == expected
