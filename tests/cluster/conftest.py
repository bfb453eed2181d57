"""The cluster tier of `make test` (`make cluster-test`): a real one-node Kubernetes,
built from upstream source (tasklab_devtools.cluster), brought up with `make
cluster-up`'s own command, tasklab installed on it with the helm arguments of `make
kind-up`, then what users do there; the cluster is stopped at the end of the session,
also when a test fails (its logs are kept in artifacts/cluster-logs/).

The files run in order (test_00 ... test_90) on one release. Up to test_35 they use
the install of make kind-up as it is, each leaving it as it found it (one worker, all
Deployments at the image of the install); from test_40 on each module installs the
values it needs at its start (KEDA, HPA mode, a short grace, monitoring), without
restoring the previous ones (a reinstall and its rollout cost a minute); the last
uninstalls the release.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2eclient import Target

from tasklab_devtools.cluster.handle import NAMESPACE, RELEASE, Cluster
from tasklab_devtools.kube import Release
from tasklab_devtools.testing.stacks import artifacts_dir


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Bringing the cluster up (a cold build of Kubernetes included) happens in the
    # first test's setup; rollouts take minutes.
    for item in items:
        if item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(3600))


@pytest.fixture(scope="session")
def artifacts() -> Path:
    return artifacts_dir()


@pytest.fixture(scope="session")
def cluster(artifacts: Path) -> Iterator[Cluster]:
    handle = Cluster.default()
    try:
        handle.up()
        for name in ("KUBECONFIG", "PATH"):
            os.environ[name] = handle.env[name]
        yield handle
    finally:
        handle.down(keep_logs_in=artifacts / "cluster-logs")


@pytest.fixture(scope="session")
def installed(cluster: Cluster) -> Cluster:
    """tasklab installed as `make kind-up` installs it (namespace Pod Security restricted)."""
    cluster.cli("install", "--namespace", NAMESPACE, "--release", RELEASE, timeout=900)
    return cluster


@pytest.fixture(scope="session")
def release(installed: Cluster) -> Release:
    found = Release(namespace=NAMESPACE)
    found.wait_rollouts()
    return found


@pytest.fixture(scope="session")
def target(release: Release, installed: Cluster) -> Target:
    """The api through the NodePort that kind publishes on the host (127.0.0.1:30080),
    which outlives any one api pod (a port-forward ends with its pod)."""
    return Target(
        base_url=f"http://127.0.0.1:{installed.host_port(30080)}",
        secret=release.callback_secret(),
    )
