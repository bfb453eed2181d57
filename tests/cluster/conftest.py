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
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
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


@dataclass
class SettledRelease(Release):
    """A :class:`Release` whose :meth:`wait_rollouts` also waits for the api behind the
    NodePort: until no api pod is terminating and the api answers on new connections
    several times in a row, and then drops the tests' kept-alive connections. (Right
    after a rollout, a connection could still lead to the api pod going away: "Server
    disconnected", ERR_SOCKET_NOT_CONNECTED.)"""

    #: The api through the NodePort (empty: the pods alone are waited for).
    api_url: str = ""
    targets: list[Target] = field(default_factory=list)

    def wait_rollouts(self, timeout: float = 300) -> None:
        super().wait_rollouts(timeout)
        deadline = time.monotonic() + 120
        in_a_row = 0
        while in_a_row < 3:
            if time.monotonic() > deadline:
                raise TimeoutError("the api behind the NodePort did not settle in 120 s")
            in_a_row = in_a_row + 1 if self._api_settled() else 0
            time.sleep(0.5)
        for target in self.targets:
            target.reconnect()

    def _api_settled(self) -> bool:
        pods = self.core.list_namespaced_pod(
            self.namespace, label_selector="app.kubernetes.io/component=api"
        ).items
        if any(p.metadata.deletion_timestamp is not None for p in pods):
            return False
        if not self.api_url:
            return True
        try:
            return httpx.get(f"{self.api_url}/readyz", timeout=5).status_code == 200
        except httpx.TransportError:
            return False


@pytest.fixture(scope="session")
def release(installed: Cluster) -> SettledRelease:
    found = SettledRelease(
        namespace=NAMESPACE, api_url=f"http://127.0.0.1:{installed.host_port(30080)}"
    )
    found.wait_rollouts()
    return found


@pytest.fixture(scope="session")
def target(release: SettledRelease) -> Target:
    """The api through the NodePort that kind publishes on the host (127.0.0.1:30080),
    which outlives any one api pod (a port-forward ends with its pod)."""
    found = Target(base_url=release.api_url, secret=release.callback_secret())
    release.targets.append(found)
    return found
