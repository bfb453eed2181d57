"""Add-ons of the test cluster beyond DNS and storage, each from its own project:

* **KEDA** (``cluster up --keda``): its operator and metrics apiserver built from
  ``tools/cluster/keda``, installed from the module's own manifests
  (``config/minimal``: CRDs, RBAC, both Deployments, the external-metrics APIService;
  no admission webhooks), with the images built here;
* **metrics-server** (``--metrics-server``, what an HPA on CPU needs): from
  ``tools/cluster/metrics-server`` and its ``manifests/base``, checking the kubelet's
  serving certificate against the cluster CA;
* **Prometheus** (:func:`apply_prometheus`): Debian's, discovering its targets through
  the Kubernetes API with the scrape configurations :mod:`.scrape` derives from the
  chart's ServiceMonitors, and loading the chart's PrometheusRule groups.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tasklab_devtools.cluster.addons import kubectl, kubectl_binary
from tasklab_devtools.cluster.build import repo_root
from tasklab_devtools.cluster.config import Layout

__all__ = ["apply_keda", "apply_metrics_server", "apply_prometheus", "prometheus_objects"]

PROMETHEUS_NAMESPACE = "monitoring"
#: The NodePort of kind's Prometheus (deploy/kind/cluster.yaml maps it to the host).
PROMETHEUS_NODE_PORT = 30090


def _digest(value: object) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


def _module_dir(module: str, where: str) -> Path:
    done = subprocess.run(
        ["go", "list", "-m", "-json", module],
        cwd=repo_root() / "tools" / "cluster" / where,
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "GOTOOLCHAIN": "local"},
    )
    return Path(json.loads(done.stdout)["Dir"])


def _kustomize(folder: Path) -> list[dict[str, Any]]:
    done = subprocess.run(
        [kubectl_binary(), "kustomize", str(folder)], capture_output=True, text=True, check=True
    )
    return [o for o in yaml.safe_load_all(done.stdout) if o]


def _containers(obj: dict[str, Any]) -> list[dict[str, Any]]:
    if obj.get("kind") != "Deployment":
        return []
    spec = obj["spec"]["template"]["spec"]
    return [*spec.get("containers", []), *spec.get("initContainers", [])]


def _apply(layout: Layout, objects: list[dict[str, Any]]) -> None:
    kubectl(
        layout,
        "apply",
        "--server-side",
        "--force-conflicts",
        "-f",
        "-",
        input_text=yaml.safe_dump_all(objects, sort_keys=False),
        timeout=300,
    )


def _rollout(layout: Layout, namespace: str, names: list[str]) -> None:
    for name in names:
        kubectl(
            layout, "-n", namespace, "rollout", "status", f"deployment/{name}",
            "--timeout=300s", timeout=320,
        )  # fmt: skip


def keda_objects(images: dict[str, str]) -> list[dict[str, Any]]:
    """KEDA's own manifests (config/minimal) with the images built here."""
    objects = _kustomize(_module_dir("github.com/kedacore/keda/v2", "keda") / "config" / "minimal")
    for obj in objects:
        for container in _containers(obj):
            name = "keda-metrics-apiserver" if "metrics-apiserver" in container["image"] else "keda"
            container["image"] = images[name]
            container["imagePullPolicy"] = "Never"
    return objects


def apply_keda(layout: Layout, images: dict[str, str]) -> None:
    _apply(layout, keda_objects(images))
    _rollout(layout, "keda", ["keda-operator", "keda-metrics-apiserver"])


def metrics_server_objects(image: str) -> list[dict[str, Any]]:
    """metrics-server's own base manifests, checking the kubelets' certificates against
    the cluster CA (the kube-root-ca.crt ConfigMap every namespace has)."""
    base = _module_dir("sigs.k8s.io/metrics-server", "metrics-server") / "manifests" / "base"
    objects = _kustomize(base)
    for obj in objects:
        for container in _containers(obj):
            container["image"] = image
            container["imagePullPolicy"] = "Never"
            container["args"] = [
                *container.get("args", []),
                "--kubelet-certificate-authority=/etc/cluster-ca/ca.crt",
            ]
            container.setdefault("volumeMounts", []).append(
                {"name": "cluster-ca", "mountPath": "/etc/cluster-ca", "readOnly": True}
            )
        if obj.get("kind") == "Deployment":
            obj["spec"]["template"]["spec"].setdefault("volumes", []).append(
                {"name": "cluster-ca", "configMap": {"name": "kube-root-ca.crt"}}
            )
    return objects


def apply_metrics_server(layout: Layout, image: str) -> None:
    _apply(layout, metrics_server_objects(image))
    _rollout(layout, "kube-system", ["metrics-server"])
    kubectl(
        layout, "wait", "--for=condition=Available", "apiservice/v1beta1.metrics.k8s.io",
        "--timeout=180s", timeout=200,
    )  # fmt: skip


def prometheus_objects(
    image: str, scrape_configs: list[dict[str, Any]], rule_groups: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Namespace, RBAC for service discovery, configuration, Deployment and Service."""
    ns, name = PROMETHEUS_NAMESPACE, "prometheus"
    labels = {"app.kubernetes.io/name": name}
    config = {
        "global": {"scrape_interval": "15s", "evaluation_interval": "15s"},
        "rule_files": ["/etc/prometheus/rules.yaml"],
        "scrape_configs": scrape_configs,
    }
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}},
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": ns}},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "tasklab-test-prometheus"},
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["services", "endpoints", "pods"],
                    "verbs": ["get", "list", "watch"],
                },
                {
                    "apiGroups": ["discovery.k8s.io"],
                    "resources": ["endpointslices"],
                    "verbs": ["get", "list", "watch"],
                },
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "tasklab-test-prometheus"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "tasklab-test-prometheus",
            },
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": ns}],
        },
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": ns},
            "data": {
                "prometheus.yml": yaml.safe_dump(config, sort_keys=False),
                "rules.yaml": yaml.safe_dump({"groups": rule_groups}, sort_keys=False),
            },
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "namespace": ns, "labels": labels},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {
                        "labels": labels,
                        # A new configuration rolls the pod (Prometheus reads it at start).
                        "annotations": {"checksum/config": _digest(config)},
                    },
                    "spec": {
                        "serviceAccountName": name,
                        "securityContext": {
                            "runAsNonRoot": True,
                            "runAsUser": 65534,
                            "seccompProfile": {"type": "RuntimeDefault"},
                        },
                        "containers": [
                            {
                                "name": name,
                                "image": image,
                                "imagePullPolicy": "Never",
                                "args": [
                                    "--config.file=/etc/prometheus/prometheus.yml",
                                    "--storage.tsdb.path=/prometheus",
                                    "--storage.tsdb.retention.time=2h",
                                    "--web.listen-address=:9090",
                                ],
                                "ports": [{"name": "web", "containerPort": 9090}],
                                "readinessProbe": {"httpGet": {"path": "/-/ready", "port": 9090}},
                                "securityContext": {
                                    "allowPrivilegeEscalation": False,
                                    "readOnlyRootFilesystem": True,
                                    "capabilities": {"drop": ["ALL"]},
                                },
                                "volumeMounts": [
                                    {"name": "config", "mountPath": "/etc/prometheus"},
                                    {"name": "data", "mountPath": "/prometheus"},
                                ],
                            }
                        ],
                        "volumes": [
                            {"name": "config", "configMap": {"name": name}},
                            {"name": "data", "emptyDir": {}},
                        ],
                    },
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "namespace": ns, "labels": labels},
            "spec": {
                "type": "NodePort",
                "selector": labels,
                "ports": [{"name": "web", "port": 9090, "nodePort": PROMETHEUS_NODE_PORT}],
            },
        },
    ]


def apply_prometheus(
    layout: Layout,
    image: str,
    scrape_configs: list[dict[str, Any]],
    rule_groups: list[dict[str, Any]],
) -> None:
    _apply(layout, prometheus_objects(image, scrape_configs, rule_groups))
    _rollout(layout, PROMETHEUS_NAMESPACE, ["prometheus"])
