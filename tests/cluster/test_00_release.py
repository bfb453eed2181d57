"""The release on the real cluster: installed, every pod Ready, `helm test` passes,
the namespace's Pod Security level enforced by the apiserver itself."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from tasklab_devtools.cluster.handle import NAMESPACE, RELEASE, Cluster
from tasklab_devtools.kube import Release

ROOT = Path(__file__).resolve().parents[2]


def test_the_cluster_runs_the_kubernetes_minor_of_the_kind_config(cluster: Cluster) -> None:
    version = json.loads(cluster.kubectl("version", "-o", "json").stdout)["serverVersion"]
    kind = yaml.safe_load((ROOT / "deploy" / "kind" / "cluster.yaml").read_text())
    image = kind["nodes"][0]["image"]
    kind_minor = re.search(r":v1\.(\d+)\.", image)
    assert kind_minor is not None, image
    assert (version["major"], version["minor"]) == ("1", kind_minor.group(1)), (version, image)
    nodes = json.loads(cluster.kubectl("get", "nodes", "-o", "json").stdout)["items"]
    assert len(nodes) == 1
    info = nodes[0]["status"]["nodeInfo"]
    assert info["kubeletVersion"] == version["gitVersion"]
    assert info["containerRuntimeVersion"].startswith("containerd://2.")


def test_every_pod_is_ready_and_helm_test_passes(installed: Cluster, release: Release) -> None:
    pods = json.loads(installed.kubectl("-n", NAMESPACE, "get", "pods", "-o", "json").stdout)
    components = set()
    for pod in pods["items"]:
        conditions = {c["type"]: c["status"] for c in pod["status"].get("conditions", [])}
        assert conditions.get("Ready") == "True", (pod["metadata"]["name"], conditions)
        components.add(pod["metadata"]["labels"].get("app.kubernetes.io/component"))
    assert {"api", "celery-worker", "consumer", "celery-beat", "broker"} <= components
    tested = installed.helm("test", RELEASE, "-n", NAMESPACE, timeout=600)
    assert "Phase:          Succeeded" in tested.stdout, tested.stdout


def test_pod_security_restricted_is_enforced(installed: Cluster) -> None:
    labels = json.loads(installed.kubectl("get", "namespace", NAMESPACE, "-o", "json").stdout)
    assert labels["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    # A pod that runs as root with privilege escalation is refused by admission.
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "not-restricted", "namespace": NAMESPACE},
        "spec": {"containers": [{"name": "c", "image": "tasklab.local/busybox:bookworm"}]},
    }
    refused = installed.kubectl(
        "apply", "--dry-run=server", "-f", "-", input_text=json.dumps(pod), check=False
    )
    assert refused.returncode != 0
    assert 'violates PodSecurity "restricted' in refused.stderr, refused.stderr
