"""Add-ons of the test cluster beyond DNS and storage, each from its own project:

* **KEDA** (``cluster up --keda``): its operator and metrics apiserver built from
  ``tools/cluster/keda``, installed from the module's own manifests
  (``config/minimal``: CRDs, RBAC, both Deployments, the external-metrics APIService;
  no admission webhooks), with the images built here;
* **metrics-server** (``--metrics-server``, what an HPA on CPU needs): from
  ``tools/cluster/metrics-server`` and its ``manifests/base``, checking the kubelet's
  serving certificate against the cluster CA;
* **monitoring** (``--monitoring``): the Prometheus Operator (its CRDs, RBAC and
  Deployment from the module's own ``bundle.yaml``), a Prometheus it runs that selects
  every ServiceMonitor and PrometheusRule of the cluster (as ``make kind-up``'s
  kube-prometheus-stack values do), published on kind's NodePort 30090, and
  kube-state-metrics (its ``examples/standard``) with the ServiceMonitor
  kube-prometheus-stack gives it. See :mod:`.monitoring`.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml

from tasklab_devtools.cluster.addons import kubectl, kubectl_binary
from tasklab_devtools.cluster.build import module_source
from tasklab_devtools.cluster.config import Layout

__all__ = ["apply", "apply_keda", "apply_metrics_server", "containers", "kustomize", "rollout"]


def kustomize(folder: Path) -> list[dict[str, Any]]:
    done = subprocess.run(
        [kubectl_binary(), "kustomize", str(folder)], capture_output=True, text=True, check=True
    )
    return [o for o in yaml.safe_load_all(done.stdout) if o]


def containers(obj: dict[str, Any]) -> list[dict[str, Any]]:
    if obj.get("kind") != "Deployment":
        return []
    spec = obj["spec"]["template"]["spec"]
    return [*spec.get("containers", []), *spec.get("initContainers", [])]


def apply(layout: Layout, objects: list[dict[str, Any]]) -> None:
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


def rollout(layout: Layout, namespace: str, names: list[str]) -> None:
    for name in names:
        kubectl(
            layout, "-n", namespace, "rollout", "status", f"deployment/{name}",
            "--timeout=300s", timeout=320,
        )  # fmt: skip


def keda_objects(images: dict[str, str]) -> list[dict[str, Any]]:
    """KEDA's own manifests (config/minimal) with the images built here."""
    objects = kustomize(module_source("keda", "github.com/kedacore/keda/v2") / "config" / "minimal")
    for obj in objects:
        for container in containers(obj):
            name = "keda-metrics-apiserver" if "metrics-apiserver" in container["image"] else "keda"
            container["image"] = images[name]
            container["imagePullPolicy"] = "Never"
    return objects


def apply_keda(layout: Layout, images: dict[str, str]) -> None:
    apply(layout, keda_objects(images))
    rollout(layout, "keda", ["keda-operator", "keda-metrics-apiserver"])


def metrics_server_objects(image: str) -> list[dict[str, Any]]:
    """metrics-server's own base manifests, checking the kubelets' certificates against
    the cluster CA (the kube-root-ca.crt ConfigMap every namespace has)."""
    base = module_source("metrics-server", "sigs.k8s.io/metrics-server") / "manifests" / "base"
    objects = kustomize(base)
    for obj in objects:
        for container in containers(obj):
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
    apply(layout, metrics_server_objects(image))
    rollout(layout, "kube-system", ["metrics-server"])
    kubectl(
        layout, "wait", "--for=condition=Available", "apiservice/v1beta1.metrics.k8s.io",
        "--timeout=180s", timeout=200,
    )  # fmt: skip
