"""Monitoring on the test cluster, as ``make kind-up`` has it from kube-prometheus-stack:

* the **Prometheus Operator** and its config reloader, built from
  ``tools/cluster/prometheus-operator``; its CRDs, RBAC and Deployment from the module's
  own ``bundle.yaml``, moved to namespace ``monitoring``;
* a **Prometheus** the operator runs (Prometheus built from ``tools/cluster/prometheus``),
  selecting every ServiceMonitor and PrometheusRule of the cluster, as
  ``deploy/kind/kube-prometheus-stack-values.yaml`` makes kube-prometheus-stack's do,
  published on kind's NodePort 30090;
* **kube-state-metrics** (``tools/cluster/kube-state-metrics``, its
  ``examples/standard``) with the ServiceMonitor kube-prometheus-stack gives it (the
  dashboards' replicas panel reads it).

The chart is installed afterwards, so it finds ``monitoring.coreos.com/v1`` and renders
its ServiceMonitors and PrometheusRule, which the operator then turns into the
Prometheus's configuration: discovery, selectors, ports and NetworkPolicies all as on
kind. No Grafana: none can be had here (the dashboards' queries are checked against
this Prometheus instead).
"""

from __future__ import annotations

import time
from typing import Any, cast

import yaml

from tasklab_devtools.cluster.addons import kubectl
from tasklab_devtools.cluster.build import module_source, module_version, repo_root
from tasklab_devtools.cluster.config import Layout
from tasklab_devtools.cluster.extras import apply, containers, kustomize, rollout

__all__ = ["NAMESPACE", "NODE_PORT", "apply_monitoring", "monitoring_objects", "versions"]

Obj = dict[str, Any]

NAMESPACE = "monitoring"
#: The NodePort of kind's Prometheus (deploy/kind/cluster.yaml maps it to the host).
NODE_PORT = 30090
PROMETHEUS = "tasklab"
OPERATOR_MODULE = "github.com/prometheus-operator/prometheus-operator"
KSM_MODULE = "k8s.io/kube-state-metrics/v2"
_NAMESPACED = {"Deployment", "ServiceAccount", "Service", "ConfigMap", "Secret"}


def versions() -> dict[str, str]:
    """The versions ``tools/cluster/*/go.mod`` pin: operator, Prometheus, kube-state-metrics."""
    folder = repo_root() / "tools" / "cluster"
    return {
        "prometheus-operator": module_version(folder / "prometheus-operator", OPERATOR_MODULE),
        "prometheus": _prometheus_release(
            module_version(folder / "prometheus", "github.com/prometheus/prometheus")
        ),
        "kube-state-metrics": module_version(folder / "kube-state-metrics", KSM_MODULE),
    }


def _prometheus_release(module: str) -> str:
    """Prometheus's Go module v0.MMM.P is release v3.(MMM-300).P (v0.316.0: v3.16.0)."""
    _, minor, patch = module.lstrip("v").split(".")[:3]
    major, rest = divmod(int(minor), 100)
    return f"v{major}.{rest}.{patch}"


class _BundleLoader(yaml.SafeLoader):
    """YAML 1.1 reads a bare ``=`` (an enum value in the CRDs) as the ``value`` tag, which
    PyYAML cannot build: here it is the string it is."""


def _value_as_string(loader: yaml.SafeLoader, node: yaml.Node) -> str:
    return str(loader.construct_scalar(cast(yaml.ScalarNode, node)))


_BundleLoader.add_constructor("tag:yaml.org,2002:value", _value_as_string)


def _in_namespace(objects: list[Obj]) -> list[Obj]:
    for obj in objects:
        if obj["kind"] in _NAMESPACED:
            obj["metadata"]["namespace"] = NAMESPACE
        for subject in obj.get("subjects", []):
            if subject.get("kind") == "ServiceAccount":
                subject["namespace"] = NAMESPACE
    return objects


def operator_objects(images: dict[str, str]) -> list[Obj]:
    """The operator's bundle (CRDs, RBAC, Deployment) with the images built here."""
    bundle = module_source("prometheus-operator", OPERATOR_MODULE) / "bundle.yaml"
    objects = _in_namespace([o for o in yaml.load_all(bundle.read_text(), _BundleLoader) if o])
    for obj in objects:
        for container in containers(obj):
            container["image"] = images["prometheus-operator"]
            container["imagePullPolicy"] = "Never"
            container["args"] = [
                f"--prometheus-config-reloader={images['prometheus-config-reloader']}"
                if arg.startswith("--prometheus-config-reloader=")
                else arg
                for arg in container.get("args", [])
            ]
    return objects


def prometheus_objects(image: str, version: str) -> list[Obj]:
    """RBAC for Prometheus's discovery, the Prometheus resource and its NodePort."""
    rbac = module_source("prometheus-operator", OPERATOR_MODULE) / "example" / "rbac" / "prometheus"
    objects = _in_namespace(
        [
            o
            for name in ("service-account", "cluster-role", "cluster-role-binding")
            for o in yaml.safe_load_all((rbac / f"prometheus-{name}.yaml").read_text())
            if o
        ]
    )
    everything: Obj = {}
    objects.append(
        {
            "apiVersion": "monitoring.coreos.com/v1",
            "kind": "Prometheus",
            "metadata": {"name": PROMETHEUS, "namespace": NAMESPACE},
            "spec": {
                "image": image,
                "imagePullPolicy": "Never",
                "version": version,
                "replicas": 1,
                "serviceAccountName": "prometheus",
                # kube-prometheus-stack with make kind-up's values: every monitor and
                # rule of every namespace.
                "serviceMonitorSelector": everything,
                "serviceMonitorNamespaceSelector": everything,
                "podMonitorSelector": everything,
                "podMonitorNamespaceSelector": everything,
                "ruleSelector": everything,
                "ruleNamespaceSelector": everything,
                "scrapeInterval": "15s",
                "evaluationInterval": "15s",
                "retention": "2h",
                "resources": {"requests": {"cpu": "100m", "memory": "200Mi"}},
                "securityContext": {
                    "runAsNonRoot": True,
                    "runAsUser": 65534,
                    "runAsGroup": 65534,
                    "fsGroup": 65534,
                    "seccompProfile": {"type": "RuntimeDefault"},
                },
            },
        }
    )
    objects.append(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "prometheus", "namespace": NAMESPACE},
            "spec": {
                "type": "NodePort",
                "selector": {"prometheus": PROMETHEUS},
                "ports": [
                    {"name": "web", "port": 9090, "targetPort": "web", "nodePort": NODE_PORT}
                ],
            },
        }
    )
    return objects


def kube_state_metrics_objects(image: str) -> list[Obj]:
    """kube-state-metrics' standard example, and the ServiceMonitor kube-prometheus-stack
    scrapes it with (``honorLabels``: a series keeps the namespace of its object)."""
    standard = module_source("kube-state-metrics", KSM_MODULE) / "examples" / "standard"
    objects = kustomize(standard)
    name = ""
    for obj in objects:
        for container in containers(obj):
            container["image"] = image
            container["imagePullPolicy"] = "Never"
        if obj["kind"] == "Service":
            name = obj["metadata"]["labels"]["app.kubernetes.io/name"]
    objects.append(
        {
            "apiVersion": "monitoring.coreos.com/v1",
            "kind": "ServiceMonitor",
            "metadata": {"name": "kube-state-metrics", "namespace": "kube-system"},
            "spec": {
                "selector": {"matchLabels": {"app.kubernetes.io/name": name}},
                "endpoints": [{"port": "http-metrics", "honorLabels": True}],
            },
        }
    )
    return objects


def monitoring_objects(images: dict[str, str]) -> tuple[list[Obj], list[Obj]]:
    """(what goes first: the namespace and the operator with its CRDs; what needs them)."""
    first = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
        *operator_objects(images),
    ]
    then = [
        *prometheus_objects(images["prometheus"], versions()["prometheus"]),
        *kube_state_metrics_objects(images["kube-state-metrics"]),
    ]
    return first, then


def apply_monitoring(layout: Layout, images: dict[str, str]) -> None:
    """Apply the operator, wait for its CRDs, then Prometheus and kube-state-metrics;
    wait until each runs."""
    first, then = monitoring_objects(images)
    apply(layout, first)
    crds = [o["metadata"]["name"] for o in first if o["kind"] == "CustomResourceDefinition"]
    kubectl(
        layout, "wait", "--for=condition=Established", "--timeout=120s",
        *(f"crd/{name}" for name in crds), timeout=140,
    )  # fmt: skip
    rollout(layout, NAMESPACE, ["prometheus-operator"])
    apply(layout, then)
    rollout(layout, "kube-system", ["kube-state-metrics"])
    # The operator makes the StatefulSet a moment after the Prometheus resource exists.
    statefulset = f"statefulset/prometheus-{PROMETHEUS}"
    deadline = time.monotonic() + 120
    while True:
        try:
            kubectl(layout, "-n", NAMESPACE, "get", statefulset)
            break
        except RuntimeError:
            if time.monotonic() > deadline:
                raise
            time.sleep(2)
    kubectl(
        layout, "-n", NAMESPACE, "rollout", "status", statefulset, "--timeout=300s", timeout=320
    )
