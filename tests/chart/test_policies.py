"""The NetworkPolicies admit exactly the connections intended, ingress and egress.

Every rendered policy is evaluated (tasklab_devtools.netpol) over a small cluster: the
chart's own pods (labels and container ports as rendered), a pod of the release's
namespace that copies tasklab's labels but not a component's, a pod of another
namespace that copies the worker's labels exactly, Prometheus, the KEDA operator and
CoreDNS in their namespaces, and addresses outside the cluster (the API server, the
internet, an external broker and database). For each value set, every connection that
involves one of the chart's pods, on every port the destination serves, must be
allowed if and only if it is in the intended list below.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from tasklab_devtools import chart
from tasklab_devtools.chart import Obj
from tasklab_devtools.netpol import Endpoint, allowed, selects

SET_NAMES = [s.name for s in chart.value_sets()]
NS = chart.NAMESPACE
ADDRESSES = iter(f"10.244.0.{n}" for n in range(10, 250))

Connection = tuple[str, str, int, str]  # source, destination, port, protocol


def _pod(name: str, namespace: str, labels: dict[str, str], **ports: int) -> Endpoint:
    return Endpoint(
        name,
        next(ADDRESSES),
        namespace,
        labels,
        {"kubernetes.io/metadata.name": namespace},
        ports,
    )


def _worker_labels(docs: list[Obj]) -> dict[str, str]:
    (worker,) = chart.find(docs, "Deployment", "celery-worker")
    return dict(chart.pod_labels(worker))


def _world(docs: list[Obj]) -> dict[str, Endpoint]:
    """The chart's pods and everything around them, by name."""
    ours = {}
    for obj, spec in chart.pod_specs(docs):
        name = "helm-test" if obj["kind"] == "Pod" else obj["metadata"]["name"]
        ports = {
            p["name"]: p["containerPort"] for c in spec["containers"] for p in c.get("ports", [])
        }
        ours[name] = _pod(name, NS, dict(chart.pod_labels(obj)), **ports)
    copied = {k: v for k, v in _worker_labels(docs).items() if k != "app.kubernetes.io/component"}
    others = [
        _pod("impostor", NS, {**copied, "app.kubernetes.io/component": "debug"}),
        _pod("stranger", "other", _worker_labels(docs)),
        _pod("prometheus", "monitoring", {"app.kubernetes.io/name": "prometheus"}, web=9090),
        _pod("keda", "keda", {"app": "keda-operator"}, metrics=8080),
        _pod("coredns", "kube-system", {"k8s-app": "kube-dns"}, dns=53),
        Endpoint("apiserver", "172.18.0.2"),
        Endpoint("internet", "203.0.113.5"),
        Endpoint("mq", "192.0.2.10"),
        Endpoint("db", "192.0.2.20"),
    ]
    return {**ours, **{e.name: e for e in others}}


#: Ports each endpoint that is not one of the chart's pods serves.
SERVED: dict[str, list[tuple[int, str]]] = {
    "impostor": [(8080, "TCP")],
    "stranger": [(8080, "TCP")],
    "prometheus": [(9090, "TCP")],
    "keda": [(8080, "TCP")],
    "coredns": [(53, "UDP"), (53, "TCP")],
    "apiserver": [(6443, "TCP")],
    "internet": [(443, "TCP"), (80, "TCP")],
    "mq": [(5672, "TCP"), (5671, "TCP"), (15671, "TCP")],
    "db": [(5432, "TCP")],
}


def _served(endpoint: Endpoint) -> list[tuple[int, str]]:
    if endpoint.name in SERVED:
        return SERVED[endpoint.name]
    # The chart's pods: their container ports; one that serves none is probed on 8080.
    return [(port, "TCP") for port in endpoint.ports.values()] or [(8080, "TCP")]


def reachable(docs: list[Obj]) -> set[Connection]:
    """Every allowed connection that starts or ends at one of the chart's pods."""
    policies = chart.find(docs, "NetworkPolicy")
    world = _world(docs)
    ours = {name for name, e in world.items() if e.namespace == NS and name != "impostor"}
    found = set()
    for src, dst in itertools.permutations(world.values(), 2):
        if src.name not in ours and dst.name not in ours:
            continue
        for port, protocol in _served(dst):
            if allowed(policies, src, dst, port, protocol):
                found.add((src.name, dst.name, port, protocol))
    return found


def intended(
    *,
    beat: bool = True,
    bundled: bool = True,
    keda: bool = False,
    external_api: bool = False,
    kubernetes_api: str = "anywhere",
) -> set[Connection]:
    """The connections the chart means to allow (the rest must be refused)."""
    workers = ["celery-worker", "consumer"]
    clients = ["api", *workers, *(["celery-beat"] if beat else [])]
    want: set[Connection] = set()
    for pod in [*clients, "helm-test"]:  # DNS
        want |= {(pod, "coredns", 53, "UDP"), (pod, "coredns", 53, "TCP")}
    broker = "rabbitmq" if bundled else "mq"
    want |= {(pod, broker, 5672, "TCP") for pod in clients}  # AMQP
    if bundled:
        want.add(("api", "rabbitmq", 15672, "TCP"))  # queue figures
        want.add(("prometheus", "rabbitmq", 15692, "TCP"))  # broker metrics
        if keda:
            want.add(("keda", "rabbitmq", 15672, "TCP"))  # KEDA's queue length
    else:
        want.add(("api", "mq", 15671, "TCP"))  # the management URL's port
        want.add(("api", "db", 5432, "TCP"))
    # The api's public port: the namespace, Prometheus; from anywhere when published.
    public = {"helm-test", "impostor", "prometheus"}
    if external_api:  # any address: every endpoint whose egress is not the chart's
        public |= {*SERVED, "internet"}
    want |= {(src, "api", 8080, "TCP") for src in public}
    want |= {(w, "api", 8081, "TCP") for w in workers}  # the signed routes
    # The workers view: the API server (by default on its ports at any address).
    if kubernetes_api != "off":
        want.add(("api", "apiserver", 6443, "TCP"))
    if kubernetes_api == "anywhere":
        want.add(("api", "internet", 443, "TCP"))
    return want


def _expected(name: str) -> set[Connection]:
    return intended(
        beat=name != "no-beat",
        bundled=name != "external",
        keda=name in ("keda", "kind-up-keda-1"),
        external_api=name.startswith("kind"),
    )


def _compare(found: set[Connection], want: set[Connection]) -> None:
    extra, missing = sorted(found - want), sorted(want - found)
    assert not extra and not missing, (
        f"allowed but not intended: {extra}\nintended but refused: {missing}"
    )


@pytest.mark.parametrize("name", SET_NAMES)
def test_the_policies_admit_exactly_the_intended_connections(
    rendered: dict[str, list[Obj]], name: str
) -> None:
    _compare(reachable(rendered[name]), _expected(name))


@pytest.mark.parametrize(
    ("args", "kubernetes_api"),
    [
        (
            [
                "--set-json",
                'networkPolicy.egress.kubernetesApi.to=[{"ipBlock":{"cidr":"172.18.0.2/32"}}]',
            ],
            "narrowed",
        ),
        (["--set", "api.kubernetes.enabled=false"], "off"),
    ],
)
def test_the_api_server_egress_follows_the_values(
    tools: None, args: list[str], kubernetes_api: str
) -> None:
    _compare(reachable(chart.render(args)), intended(kubernetes_api=kubernetes_api))


def test_every_pod_is_isolated_both_ways(rendered: dict[str, list[Obj]]) -> None:
    """Each of the chart's pods is selected by a policy of each type (so nothing the
    list above does not name gets through); selectors use the chart's component labels,
    never part-of, which any pod may carry."""
    for name, docs in rendered.items():
        policies = chart.find(docs, "NetworkPolicy")
        for obj, _ in chart.pod_specs(docs):
            labels = chart.pod_labels(obj)
            for kind in ("Ingress", "Egress"):
                assert any(
                    kind in p["spec"]["policyTypes"] and selects(p["spec"]["podSelector"], labels)
                    for p in policies
                ), (name, chart.label(obj), kind)
        text = str([p["spec"] for p in policies])
        assert "part-of" not in text, name


def test_the_evaluation_is_not_a_no_op(rendered: dict[str, list[Obj]]) -> None:
    """Without the policies everything connects; a policy without rules refuses all."""
    docs = [d for d in rendered["default"] if d["kind"] != "NetworkPolicy"]
    open_ = reachable(docs)
    assert ("stranger", "rabbitmq", 5672, "TCP") in open_
    assert ("rabbitmq", "internet", 443, "TCP") in open_
    closed: dict[str, Any] = {
        "kind": "NetworkPolicy",
        "metadata": {"name": "deny", "namespace": NS},
        "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]},
    }
    assert reachable([*docs, closed]) == set()
