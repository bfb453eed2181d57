"""The chart's NetworkPolicies enforced on the real cluster (kube-router's controller, a
daemon of the test node), as kind enforces them on users' clusters.

Everything else in this tier already runs with every policy on (the whole stack works);
here probe pods try the connections the policies must refuse, each beside a control
that the same probe can reach what it is allowed to, so a refusal means a policy and
not a broken network:

* a pod in the release's namespace without the workers' labels (even with
  ``app.kubernetes.io/part-of: tasklab``, which any pod may copy) reaches the api's public
  port but neither the broker nor the api's internal port (the signed callback);
* a pod in another namespace carrying exactly a worker's labels reaches neither;
* a pod in the release's namespace with a worker's labels reaches both (what a
  NetworkPolicy can select on: labels, within its namespace; README says so), and, held
  to the workers' egress policy, not the api's public port.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tasklab_devtools.cluster.handle import NAMESPACE, RELEASE, Cluster
from tasklab_devtools.kube import Release

from .scaling import report

OTHER_NAMESPACE = "tasklab-probe"
BROKER = f"rabbitmq.{NAMESPACE}.svc.cluster.local"
API = f"api.{NAMESPACE}.svc.cluster.local"
API_INTERNAL = f"api-internal.{NAMESPACE}.svc.cluster.local"
# A TCP connection from inside the probe: exit 0 when it opened, 1 when refused (kube-router
# rejects what no policy admits) or timed out.
CONNECT = (
    "import socket, sys\n"
    "try:\n"
    "    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=4).close()\n"
    "except OSError as exc:\n"
    "    print(exc); sys.exit(1)\n"
)


@dataclass
class Probe:
    cluster: Cluster
    name: str
    namespace: str

    def reaches(self, host: str, port: int) -> bool:
        done = self.cluster.kubectl(
            "-n", self.namespace, "exec", self.name, "--",
            "python", "-c", CONNECT, host, str(port),
            check=False, timeout=60,
        )  # fmt: skip
        return done.returncode == 0


def _worker_labels(cluster: Cluster) -> dict[str, str]:
    deployment = json.loads(
        cluster.kubectl("-n", NAMESPACE, "get", "deployment", "celery-worker", "-o", "json").stdout
    )
    labels: dict[str, str] = deployment["spec"]["template"]["metadata"]["labels"]
    return labels


def _probe_pod(name: str, namespace: str, labels: dict[str, str], image: str) -> dict[str, object]:
    """A pod that only sleeps, meeting the restricted Pod Security Standard, from the api
    image (it has Python for the connection check)."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "automountServiceAccountToken": False,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 10001,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [
                {
                    "name": "probe",
                    "image": image,
                    "imagePullPolicy": "Never",
                    "command": ["sleep", "3600"],
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "readOnlyRootFilesystem": True,
                        "capabilities": {"drop": ["ALL"]},
                    },
                }
            ],
        },
    }


@pytest.fixture(scope="module")
def probes(installed: Cluster, release: Release) -> Iterator[dict[str, Probe]]:
    installed.cli("install", timeout=900)  # make kind-up's install (the KEDA module's before)
    release.wait_rollouts()
    api = json.loads(
        installed.kubectl("-n", NAMESPACE, "get", "deployment", "api", "-o", "json").stdout
    )
    image = api["spec"]["template"]["spec"]["containers"][0]["image"]
    worker = _worker_labels(installed)
    copied = {"app.kubernetes.io/part-of": "tasklab", "app.kubernetes.io/instance": RELEASE}
    pods = {
        "impostor": (NAMESPACE, copied),
        "foreign": (OTHER_NAMESPACE, worker),
        "labelled": (NAMESPACE, worker),
    }
    installed.kubectl("create", "namespace", OTHER_NAMESPACE)
    installed.kubectl(
        "label", "namespace", OTHER_NAMESPACE, "pod-security.kubernetes.io/enforce=restricted"
    )
    manifests = [_probe_pod(f"probe-{k}", ns, labels, image) for k, (ns, labels) in pods.items()]
    try:
        installed.kubectl(
            "apply", "-f", "-", input_text="\n---\n".join(json.dumps(m) for m in manifests)
        )
        for kind, (namespace, _) in pods.items():
            installed.kubectl(
                "-n", namespace, "wait", "--for=condition=Ready", f"pod/probe-{kind}",
                "--timeout=180s", timeout=200,
            )  # fmt: skip
        yield {kind: Probe(installed, f"probe-{kind}", ns) for kind, (ns, _) in pods.items()}
    finally:
        installed.kubectl("delete", "namespace", OTHER_NAMESPACE, "--wait=false", check=False)
        installed.kubectl(
            "-n", NAMESPACE, "delete", "pod", "probe-impostor", "probe-labelled",
            "--wait=false", check=False,
        )  # fmt: skip


def test_who_reaches_the_broker_and_the_callback_route(
    probes: dict[str, Probe], artifacts: Path
) -> None:
    seen = {
        kind: {
            "api (public)": probe.reaches(API, 8080),
            "broker": probe.reaches(BROKER, 5672),
            "api-internal (callback)": probe.reaches(API_INTERNAL, 8081),
        }
        for kind, probe in probes.items()
    }
    report(artifacts, "NetworkPolicies on the cluster (kube-router)", {
        f"{kind} pod": ", ".join(f"{k}: {'open' if v else 'refused'}" for k, v in row.items())
        for kind, row in seen.items()
    })  # fmt: skip
    assert seen == {
        "impostor": {"api (public)": True, "broker": False, "api-internal (callback)": False},
        "foreign": {"api (public)": True, "broker": False, "api-internal (callback)": False},
        "labelled": {"api (public)": False, "broker": True, "api-internal (callback)": True},
    }
