"""On the kind cluster: three Celery worker pods share the tasks (make e2e-kind)."""

from __future__ import annotations

import os

import pytest
from e2eclient import Target

from tasklab_devtools.kube import Release

pytestmark = pytest.mark.skipif(
    os.environ.get("TASKLAB_E2E_TARGET") != "kind",
    reason="needs the release on a cluster (make e2e-kind)",
)


def test_tasks_spread_over_three_worker_pods(target: Target, release: Release | None) -> None:
    assert release is not None
    # Three pods, three processes each: nine tasks of 3 s fill every slot at once.
    with release.worker_replicas(3) as pods:
        assert len(pods) == 3
        tasks = [target.submit_ok(method="celery", duration=3) for _ in range(9)]
        done = [target.wait_status(task["id"], timeout=120) for task in tasks]
    assert all(task["status"] == "DONE" for task in done), done
    # A Celery worker is named celery@<hostname>, and a pod's hostname is its name.
    assert {task["worker"] for task in done} == {f"celery@{pod}" for pod in pods}
