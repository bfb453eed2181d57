"""Which connections a set of NetworkPolicies admits, evaluated offline.

The chart's tests render its policies and ask, for every pair of endpoints and port,
whether a connection would pass, as the Kubernetes NetworkPolicy API defines it: a pod
is isolated for ingress (egress) once a policy of its namespace selects it with that
policy type, and then admits only what one of those policies' rules allows; a
connection needs both the source's egress and the destination's ingress. Peers:
podSelector (the policy's namespace), namespaceSelector (any pod of the selected
namespaces), both (pods of those namespaces), ipBlock (addresses, with exceptions).
Named ports resolve against the destination pod's container ports. Endpoints that no
policy selects (other namespaces' pods, addresses outside the cluster) are open.
Not modelled: host-network pods, the node's own traffic, Service address translation
(an endpoint stands for the pod or address a Service leads to).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Endpoint", "allowed", "selects"]

Obj = dict[str, Any]


@dataclass(frozen=True)
class Endpoint:
    """A pod (namespace, labels, container ports by name) or an address outside it."""

    name: str
    ip: str
    namespace: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    namespace_labels: Mapping[str, str] = field(default_factory=dict)
    ports: Mapping[str, int] = field(default_factory=dict)

    @property
    def is_pod(self) -> bool:
        return self.namespace is not None


def selects(selector: Obj, labels: Mapping[str, str]) -> bool:
    """A label selector (matchLabels and matchExpressions); ``{}`` selects everything."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def _types(policy: Obj) -> list[str]:
    spec = policy["spec"]
    if "policyTypes" in spec:
        return list(spec["policyTypes"])
    return ["Ingress", *(["Egress"] if "egress" in spec else [])]


def _peer_matches(peer: Obj, policy_namespace: str, other: Endpoint) -> bool:
    if "ipBlock" in peer:
        block = peer["ipBlock"]
        address = ipaddress.ip_address(other.ip)
        network = ipaddress.ip_network(block["cidr"])
        if address.version != network.version or address not in network:
            return False
        return not any(
            address in ipaddress.ip_network(cidr)
            for cidr in block.get("except", [])
            if ipaddress.ip_network(cidr).version == address.version
        )
    if not other.is_pod:
        return False
    if "namespaceSelector" in peer:
        if not selects(peer["namespaceSelector"], other.namespace_labels):
            return False
    elif other.namespace != policy_namespace:
        return False
    return selects(peer.get("podSelector", {}), other.labels)


def _port_matches(rule_ports: list[Obj] | None, port: int, protocol: str, dest: Endpoint) -> bool:
    if not rule_ports:
        return True
    for item in rule_ports:
        if item.get("protocol", "TCP") != protocol:
            continue
        wanted: int | str | None = item.get("port")
        if wanted is None:
            return True
        if isinstance(wanted, str):
            if dest.ports.get(wanted) == port:
                return True
        elif wanted <= port <= int(item.get("endPort", wanted)):
            return True
    return False


def _admits(
    policies: Iterable[Obj], direction: str, pod: Endpoint, other: Endpoint, port: int,
    protocol: str, dest: Endpoint,
) -> bool:  # fmt: skip
    """Whether ``pod``'s policies of ``direction`` admit the connection with ``other``."""
    kind, peers_key = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
    isolated = False
    for policy in policies:
        namespace = policy["metadata"].get("namespace")
        if namespace != pod.namespace or direction not in _types(policy):
            continue
        if not selects(policy["spec"].get("podSelector", {}), pod.labels):
            continue
        isolated = True
        for rule in policy["spec"].get(kind) or []:
            peers = rule.get(peers_key)
            if peers and not any(_peer_matches(p, namespace, other) for p in peers):
                continue
            if _port_matches(rule.get("ports"), port, protocol, dest):
                return True
    return not isolated


def allowed(
    policies: Iterable[Obj], source: Endpoint, dest: Endpoint, port: int, protocol: str = "TCP"
) -> bool:
    """Whether a connection from ``source`` to ``dest`` on ``port`` passes every policy."""
    policies = list(policies)
    if source.is_pod and not _admits(policies, "Egress", source, dest, port, protocol, dest):
        return False
    return not dest.is_pod or _admits(policies, "Ingress", dest, source, port, protocol, dest)
