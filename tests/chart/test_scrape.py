"""The test cluster's Prometheus scrapes what the chart's ServiceMonitors select.

tasklab_devtools.cluster.scrape turns each ServiceMonitor endpoint into a
``kubernetes_sd_configs`` job (no Prometheus Operator can be built here). Here both are
evaluated against the chart's own Services: the relabel rules of the generated jobs,
applied to the discovery labels Prometheus gives each Service port, must keep exactly
the (Service, port) pairs the ServiceMonitor's selector, namespaces and port name pick,
with the path, interval, parameters and relabelings carried over.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from tasklab_devtools import chart
from tasklab_devtools.chart import Obj
from tasklab_devtools.cluster.scrape import scrape_configs

SETS = [s.name for s in chart.value_sets()]


def _discovered(service: Obj, port: Obj) -> dict[str, str]:
    """The labels Prometheus's endpoints discovery gives a target of this Service port."""
    meta = service["metadata"]
    labels = {
        "__meta_kubernetes_namespace": meta.get("namespace", chart.NAMESPACE),
        "__meta_kubernetes_service_name": meta["name"],
        "__meta_kubernetes_endpoint_port_name": port.get("name", ""),
        "__meta_kubernetes_pod_name": f"{meta['name']}-pod",
        "__meta_kubernetes_pod_container_name": "main",
    }
    for key, value in meta.get("labels", {}).items():
        name = re.sub(r"[^a-zA-Z0-9_]", "_", key)
        labels[f"__meta_kubernetes_service_label_{name}"] = value
        labels[f"__meta_kubernetes_service_labelpresent_{name}"] = "true"
    return labels


def _relabel(labels: dict[str, str], rules: list[dict[str, Any]]) -> dict[str, str] | None:
    """Prometheus's keep and replace actions (what the generated jobs use)."""
    out = dict(labels)
    for rule in rules:
        value = rule.get("separator", ";").join(
            out.get(s, "") for s in rule.get("source_labels", [])
        )
        match = re.fullmatch(rule.get("regex", "(.*)"), value)
        action = rule.get("action", "replace")
        if action == "keep":
            if match is None:
                return None
        elif action == "replace":
            if match is not None:
                out[rule["target_label"]] = match.expand(
                    re.sub(r"\$(\d+)", r"\\\1", rule.get("replacement", "$1"))
                )
        else:
            raise AssertionError(f"unexpected action {action}")
    return out


def _selected(monitor: Obj, service: Obj, port: Obj) -> bool:
    """What the Prometheus Operator selects for one ServiceMonitor endpoint's port."""
    spec = monitor["spec"]
    namespaces = spec.get("namespaceSelector", {}).get("matchNames") or [
        monitor["metadata"]["namespace"]
    ]
    labels = service["metadata"].get("labels", {})
    return service["metadata"].get("namespace", chart.NAMESPACE) in namespaces and all(
        labels.get(k) == v for k, v in spec["selector"]["matchLabels"].items()
    )


@pytest.mark.parametrize("name", SETS)
def test_the_generated_jobs_scrape_what_the_servicemonitors_select(
    rendered: dict[str, list[Obj]], name: str
) -> None:
    docs = rendered[name]
    monitors = chart.find(docs, "ServiceMonitor")
    services = chart.find(docs, "Service")
    configs = scrape_configs(monitors)
    endpoints = [(m, e) for m in monitors for e in m["spec"]["endpoints"]]
    assert len(configs) == len(endpoints)
    for config, (monitor, endpoint) in zip(configs, endpoints, strict=True):
        wanted = {
            (s["metadata"]["name"], p["name"])
            for s in services
            for p in s["spec"]["ports"]
            if _selected(monitor, s, p) and p.get("name") == endpoint["port"]
        }
        kept: dict[tuple[str, str], dict[str, str]] = {}
        for service in services:
            for port in service["spec"]["ports"]:
                target = _relabel(_discovered(service, port), config["relabel_configs"])
                if target is not None:
                    kept[(service["metadata"]["name"], port["name"])] = target
        assert set(kept) == wanted and wanted, (config["job_name"], set(kept), wanted)
        assert config["metrics_path"] == endpoint.get("path", "/metrics")
        assert config.get("scrape_interval") == endpoint.get("interval")
        assert config.get("params") == endpoint.get("params")
        for (service_name, port_name), target in kept.items():
            assert target["job"] == service_name and target["endpoint"] == port_name
            for relabeling in endpoint.get("relabelings", []):
                assert target[relabeling["targetLabel"]] == relabeling["replacement"]


def test_there_is_something_to_compare(rendered: dict[str, list[Obj]]) -> None:
    monitors = chart.find(rendered["default"], "ServiceMonitor")
    assert {m["metadata"]["name"] for m in monitors} >= {"api", "rabbitmq"}
