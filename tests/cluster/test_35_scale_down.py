"""`kubectl scale` from three pods to one while tasks of 20 s run: the pods removed finish
theirs within the grace period (nothing lost, FAILED or run again)."""

from __future__ import annotations

from pathlib import Path

import pytest
from e2eclient import Target

from tasklab_devtools.cluster.handle import Cluster
from tasklab_devtools.kube import Release

from .scaling import WORKERS, report, three_to_one


@pytest.mark.parametrize(("deployment", "method"), WORKERS)
def test_scaling_down_lets_running_tasks_finish(
    installed: Cluster,
    release: Release,
    target: Target,
    artifacts: Path,
    deployment: str,
    method: str,
) -> None:
    figures, took = three_to_one(installed, target, deployment, method, 20)
    report(artifacts, f"kubectl scale {deployment} 3 → 1, 6 tasks of 20 s running (grace 3900 s)",
           {**figures, "all final after": f"{took:.0f} s"})  # fmt: skip
    assert figures == {"tasks": 6, "lost": 0, "failed": 0, "run again": 0, "attempts 2": 0}
