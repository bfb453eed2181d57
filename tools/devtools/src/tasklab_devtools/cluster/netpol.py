"""NetworkPolicies enforced on the test cluster, as kind enforces them on users' clusters.

kind's own engine (``sigs.k8s.io/kube-network-policies``) needs the kernel's nftables
``queue``, which this kind of machine lacks. kube-router's network policy controller
needs only iptables (the ``set``, ``physdev`` and ``conntrack`` matches) and ipset, which
work inside the node's network namespace: it runs as one of the node's daemons
(:meth:`.config.Layout.network_policy_argv`), filtering the pods' traffic on the bridge.
Only version 2.1.0 of its module is served, with reported security flaws: acceptable for
this throw-away cluster that nothing outside the machine can reach, not for anything
else. Its rights: the ClusterRole of its own manifests, bound to the client identity the
node's PKI gives it (``tasklab:kube-router``).
"""

from __future__ import annotations

from typing import Any

import yaml

from tasklab_devtools.cluster.build import module_source

__all__ = ["KUBE_ROUTER_MODULE", "network_policy_rbac"]

KUBE_ROUTER_MODULE = "github.com/cloudnativelabs/kube-router/v2"
USER = "tasklab:kube-router"


def network_policy_rbac() -> list[dict[str, Any]]:
    """kube-router's ClusterRole (from its module's generic manifest) and a binding of it
    to the node's kube-router client."""
    manifest = module_source("netpol", KUBE_ROUTER_MODULE) / "daemonset" / "generic-kuberouter.yaml"
    role = next(
        o for o in yaml.safe_load_all(manifest.read_text()) if o and o["kind"] == "ClusterRole"
    )
    role["metadata"] = {"name": "tasklab:kube-router"}
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": "tasklab:kube-router"},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": role["metadata"]["name"],
        },
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": USER}],
    }
    return [role, binding]
