"""The chart's ServiceMonitors as Prometheus ``kubernetes_sd_configs``, in one place.

The Prometheus Operator cannot be built here (the module proxy serves only its API
package), so the test cluster's Prometheus gets what the operator would generate from
each ServiceMonitor endpoint: endpoints discovery in the monitor's namespaces, kept
where the Service's labels match its selector and the endpoint's port is the named
one, the operator's target labels (``namespace``, ``service``, ``pod``, ``container``,
``endpoint``, ``job`` = the Service's name), then the endpoint's own relabelings; path,
interval, scheme and parameters as given. The objects come from rendering the chart
with the release's values as if the operator's CRDs were installed.
"""

from __future__ import annotations

import re
from typing import Any

from tasklab_devtools.chart import find, render

__all__ = ["chart_monitoring", "rule_groups", "scrape_configs"]

Obj = dict[str, Any]


def _label_name(key: str) -> str:
    """A Kubernetes label key as Prometheus's discovery names it (``_`` for the rest)."""
    return re.sub(r"[^a-zA-Z0-9_]", "_", key)


def _endpoint_config(monitor: Obj, index: int, endpoint: Obj) -> Obj:
    meta, spec = monitor["metadata"], monitor["spec"]
    namespaces = spec.get("namespaceSelector", {}).get("matchNames") or [meta["namespace"]]
    keep: list[Obj] = []
    for key, value in sorted(spec.get("selector", {}).get("matchLabels", {}).items()):
        label = _label_name(key)
        keep += [
            {
                "source_labels": [
                    f"__meta_kubernetes_service_label_{label}",
                    f"__meta_kubernetes_service_labelpresent_{label}",
                ],
                "regex": f"({re.escape(value)});true",
                "action": "keep",
            }
        ]
    if spec.get("selector", {}).get("matchExpressions"):
        raise ValueError(f"ServiceMonitor {meta['name']}: matchExpressions are not converted")
    keep.append(
        {
            "source_labels": ["__meta_kubernetes_endpoint_port_name"],
            "regex": re.escape(endpoint["port"]),
            "action": "keep",
        }
    )
    targets = [
        {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
        {"source_labels": ["__meta_kubernetes_service_name"], "target_label": "service"},
        {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
        {"source_labels": ["__meta_kubernetes_pod_container_name"], "target_label": "container"},
        {"source_labels": ["__meta_kubernetes_service_name"], "target_label": "job"},
        {"target_label": "endpoint", "replacement": endpoint["port"]},
    ]
    own = [
        {
            _snake(k): v
            for k, v in r.items()
            if k in ("sourceLabels", "separator", "targetLabel", "regex", "replacement", "action")
        }
        for r in endpoint.get("relabelings", [])
    ]
    config: Obj = {
        "job_name": f"serviceMonitor/{meta['namespace']}/{meta['name']}/{index}",
        "honor_labels": bool(endpoint.get("honorLabels", False)),
        "kubernetes_sd_configs": [{"role": "endpoints", "namespaces": {"names": namespaces}}],
        "metrics_path": endpoint.get("path", "/metrics"),
        "scheme": endpoint.get("scheme", "http"),
        "relabel_configs": keep + targets + own,
    }
    if "interval" in endpoint:
        config["scrape_interval"] = endpoint["interval"]
    if "params" in endpoint:
        config["params"] = endpoint["params"]
    return config


def _snake(key: str) -> str:
    return re.sub(r"(?<!^)([A-Z])", r"_\1", key).lower()


def scrape_configs(monitors: list[Obj]) -> list[Obj]:
    """One scrape configuration per ServiceMonitor endpoint, as the operator makes them."""
    return [
        _endpoint_config(monitor, index, endpoint)
        for monitor in monitors
        for index, endpoint in enumerate(monitor["spec"]["endpoints"])
    ]


def rule_groups(rules: list[Obj]) -> list[Obj]:
    """The groups of the PrometheusRules, as a Prometheus rule file holds them."""
    return [group for rule in rules for group in rule["spec"]["groups"]]


def chart_monitoring(helm_args: list[str], namespace: str) -> tuple[list[Obj], list[Obj]]:
    """The ServiceMonitors and PrometheusRules the chart renders for these values, as on
    a cluster that has the operator's CRDs."""
    docs = render(helm_args, namespace=namespace)
    return find(docs, "ServiceMonitor"), find(docs, "PrometheusRule")
