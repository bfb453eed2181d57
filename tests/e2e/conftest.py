"""The e2e suite's one fixture: the system under test.

``TASKLAB_E2E_TARGET`` picks the target; ``local`` (the default) starts the real
stack on this machine: a private RabbitMQ node (own name, ports and data dir), the
api on SQLite, a Celery worker and the consumer, each with the same command as its
container image. ``kind`` (``make e2e-kind``) drives the release on the current
kubeconfig context instead (namespace ``TASKLAB_E2E_NAMESPACE``, default tasklab),
through a ``kubectl port-forward`` to the api Service; there the tests that stop the
broker or read local process logs skip themselves (``broker`` and ``stack`` are None).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2eclient import Target

from tasklab_devtools.kube import Release
from tasklab_devtools.rabbitmq import RabbitNode, private_node
from tasklab_devtools.stack import LocalStack
from tasklab_devtools.testing.stacks import artifacts_dir, stack_config

#: Short retry delays so retry scenarios take seconds, not minutes.
FAST_RETRIES = {"RETRY_BACKOFF": "0.2", "RETRY_BACKOFF_MAX": "1", "MAX_RETRIES": "3"}


@pytest.fixture(scope="session")
def artifacts() -> Path:
    return artifacts_dir()


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitNode]:
    with private_node("tasklab-e2e", tmp_path_factory.mktemp("rabbitmq")) as node:
        yield node


def target_kind() -> str:
    kind = os.environ.get("TASKLAB_E2E_TARGET", "local")
    if kind not in ("local", "kind"):
        raise pytest.UsageError(f"TASKLAB_E2E_TARGET={kind!r}: 'local' or 'kind'")
    return kind


@pytest.fixture(scope="session")
def release() -> Release | None:
    """The release on the cluster (TASKLAB_E2E_TARGET=kind), rolled out; else None."""
    if target_kind() != "kind":
        return None
    cluster = Release(namespace=os.environ.get("TASKLAB_E2E_NAMESPACE", "tasklab"))
    cluster.wait_rollouts()
    return cluster


@pytest.fixture(scope="session")
def target(
    request: pytest.FixtureRequest,
    release: Release | None,
    tmp_path_factory: pytest.TempPathFactory,
    artifacts: Path,
) -> Iterator[Target]:
    if release is not None:
        with release.port_forward("api", 8080, log_dir=artifacts / "logs-kind") as url:
            yield Target(base_url=url, secret=release.callback_secret())
        return
    broker: RabbitNode = request.getfixturevalue("broker")
    cfg = stack_config(broker, tmp_path_factory.mktemp("stack"), "logs", FAST_RETRIES)
    stack = LocalStack(cfg)
    stack.start()
    try:
        yield Target(
            base_url=cfg.api_base_url, secret=cfg.callback_secret, broker=broker, stack=stack
        )
    finally:
        stack.stop()
