"""What the cluster tier's scaling tests share: tasks spread over pods, and the record
of where each ran (a task killed mid-run and run again would change worker or attempt)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from e2eclient import Target

from tasklab_devtools.cluster.handle import NAMESPACE, Cluster


@dataclass
class Batch:
    """Tasks submitted together; where each started, how each ended."""

    target: Target
    tasks: list[dict[str, Any]]
    started_on: dict[str, str] = field(default_factory=dict)

    @classmethod
    def submit(cls, target: Target, count: int, **body: Any) -> Batch:
        return cls(target, [target.submit_ok(**body) for _ in range(count)])

    @property
    def ids(self) -> list[str]:
        return [str(t["id"]) for t in self.tasks]

    def wait_running(self, timeout: float = 120) -> None:
        """Until every task is IN_PROGRESS; note the worker that started each."""
        deadline = time.monotonic() + timeout
        for task_id in self.ids:
            left = max(1.0, deadline - time.monotonic())
            task = self.target.wait_status(task_id, {"IN_PROGRESS"}, timeout=left)
            self.started_on[task_id] = str(task["worker"])

    def wait_final(self, timeout: float = 300) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        return [
            self.target.wait_status(i, timeout=max(1.0, deadline - time.monotonic()))
            for i in self.ids
        ]

    def figures(self, ended: list[dict[str, Any]]) -> dict[str, int]:
        """Lost (not final), FAILED, killed mid-run (ran again: another attempt or
        another worker than the one that started it) and handed back (attempt 2)."""
        return {
            "tasks": len(ended),
            "lost": sum(t["status"] not in ("DONE", "FAILED", "CANCELLED") for t in ended),
            "failed": sum(t["status"] == "FAILED" for t in ended),
            "run again": sum(
                t["attempts"] > 1 or t["worker"] != self.started_on.get(t["id"], t["worker"])
                for t in ended
            ),
            "attempts 2": sum(t["attempts"] == 2 for t in ended),
        }


def ready_pods(cluster: Cluster, component: str) -> list[str]:
    pods = json.loads(
        cluster.kubectl(
            "-n", NAMESPACE, "get", "pods", "-l", f"app.kubernetes.io/component={component}",
            "-o", "json",
        ).stdout
    )["items"]  # fmt: skip
    return sorted(
        p["metadata"]["name"]
        for p in pods
        if not p["metadata"].get("deletionTimestamp")
        and any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in p["status"].get("conditions", [])
        )
    )


def replicas(cluster: Cluster, deployment: str) -> int:
    scale = json.loads(
        cluster.kubectl("-n", NAMESPACE, "get", "deployment", deployment, "-o", "json").stdout
    )
    return int(scale["spec"].get("replicas") or 0)


def report(artifacts: Path, title: str, lines: dict[str, object]) -> None:
    """Append the figures of a scaling run to artifacts/cluster-scaling.md."""
    with (artifacts / "cluster-scaling.md").open("a") as out:
        out.write(f"\n## {title}\n\n")
        for key, value in lines.items():
            out.write(f"- {key}: {value}\n")


#: The worker Deployments (also their pods' component label) and the method each runs.
WORKERS = [("celery-worker", "celery"), ("consumer", "rabbitmq")]


def _scale(cluster: Cluster, deployment: str, count: int) -> None:
    cluster.kubectl("-n", NAMESPACE, "scale", "deployment", deployment, f"--replicas={count}")
    cluster.wait_for(
        f"{count} Ready {deployment} pods",
        lambda: len(ready_pods(cluster, deployment)) == count,
        300,
    )


def three_to_one(
    cluster: Cluster, target: Target, deployment: str, method: str, duration: float
) -> tuple[dict[str, int], float]:
    _scale(cluster, deployment, 3)
    batch = Batch.submit(target, 6, method=method, duration=duration)  # two per pod
    batch.wait_running()
    assert len(set(batch.started_on.values())) == 3, batch.started_on
    began = time.monotonic()
    cluster.kubectl("-n", NAMESPACE, "scale", "deployment", deployment, "--replicas=1")
    ended = batch.wait_final(600)
    took = time.monotonic() - began
    cluster.wait_for("one pod left", lambda: len(ready_pods(cluster, deployment)) == 1, 300)
    return batch.figures(ended), took
