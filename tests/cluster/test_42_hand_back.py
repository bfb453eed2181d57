"""With a grace period shorter than the tasks, a scale-down hands the removed pods' tasks
back (RETRYING, requeued) before the SIGKILL, and the remaining pod runs them as
attempt 2: nothing lost, nothing FAILED.

(Between the KEDA and the HPA modules: its plain install removes KEDA's HPA, which
carries the name the chart's own HPA takes next.)"""

from __future__ import annotations

from pathlib import Path

import pytest
from e2eclient import Target

from tasklab_devtools.cluster.handle import Cluster
from tasklab_devtools.kube import Release

from .scaling import WORKERS, report, three_to_one

#: 30 s of grace (the chart's least for celery-worker): tasks still running 20 s into
#: the shutdown (30 s - handBackMarginSeconds) are handed back.
SHORT_GRACE = [
    "--set", "celeryWorker.terminationGracePeriodSeconds=30",
    "--set", "consumer.terminationGracePeriodSeconds=30",
]  # fmt: skip
#: Longer than the grace.
TASK_SECONDS = 35


@pytest.fixture(scope="module")
def short_grace(installed: Cluster, release: Release) -> Cluster:
    installed.cli("install", "--", *SHORT_GRACE, timeout=900)
    release.wait_rollouts()
    return installed


@pytest.mark.parametrize(("deployment", "method"), WORKERS)
def test_a_grace_shorter_than_the_task_hands_it_back(
    short_grace: Cluster,
    target: Target,
    artifacts: Path,
    deployment: str,
    method: str,
) -> None:
    figures, took = three_to_one(short_grace, target, deployment, method, TASK_SECONDS)
    report(
        artifacts,
        f"kubectl scale {deployment} 3 → 1, 6 tasks of {TASK_SECONDS} s running, grace 30 s",
        {**figures, "all final after": f"{took:.0f} s"},
    )
    # The remaining pod's two finish where they started; the removed pods' four are
    # handed back and end DONE as attempt 2 on the remaining pod.
    assert figures == {"tasks": 6, "lost": 0, "failed": 0, "run again": 4, "attempts 2": 4}
