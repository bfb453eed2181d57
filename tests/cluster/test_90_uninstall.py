"""`helm uninstall` leaves what the README says stays: the broker's volume and Secret."""

from __future__ import annotations

import json

from tasklab_devtools.cluster.handle import NAMESPACE, RELEASE, Cluster
from tasklab_devtools.kube import Release


def test_helm_uninstall_leaves_only_the_brokers_volume_and_secret(
    installed: Cluster, release: Release
) -> None:
    installed.helm("uninstall", RELEASE, "-n", NAMESPACE, "--wait", "--timeout", "5m", timeout=400)
    installed.wait_for(
        "every pod gone",
        lambda: (
            not json.loads(installed.kubectl("-n", NAMESPACE, "get", "pods", "-o", "json").stdout)[
                "items"
            ]
        ),
    )
    left = json.loads(
        installed.kubectl(
            "-n",
            NAMESPACE,
            "get",
            "all,pvc,secret,configmap,networkpolicy,serviceaccount,role,rolebinding",
            "-o",
            "json",
        ).stdout
    )["items"]
    names = sorted(f"{o['kind']}/{o['metadata']['name']}" for o in left)
    expected = sorted(
        [
            "PersistentVolumeClaim/data-rabbitmq-0",
            "Secret/rabbitmq",
            "ConfigMap/kube-root-ca.crt",
            "ServiceAccount/default",
        ]
    )
    assert names == expected
