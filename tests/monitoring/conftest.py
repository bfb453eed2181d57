"""The observability suite's fixtures: the real stack, scraped by a real Prometheus."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from tasklab_devtools.procs import free_port
from tasklab_devtools.prometheus import LocalPrometheus
from tasklab_devtools.rabbitmq import RabbitNode, private_node
from tasklab_devtools.stack import LocalStack, StackConfig


@pytest.fixture(scope="session")
def mon_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitNode]:
    with private_node("tasklab-mon", tmp_path_factory.mktemp("rabbitmq")) as node:
        yield node


@pytest.fixture(scope="session")
def mon_stack(
    mon_broker: RabbitNode, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[StackConfig]:
    data = tmp_path_factory.mktemp("stack")
    cfg = StackConfig(
        rmq_url=mon_broker.amqp_url,
        database_url=f"sqlite:///{data}/tasklab.db",
        callback_secret=secrets.token_urlsafe(32),
        api_port=free_port(),
        log_dir=Path("artifacts") / "logs-monitoring",
        rmq_management_url=mon_broker.management_url,
        extra_env={"RETRY_BACKOFF": "0.2", "RETRY_BACKOFF_MAX": "1", "MAX_RETRIES": "2"},
    )
    with LocalStack(cfg):
        yield cfg


@pytest.fixture(scope="session")
def prometheus(
    mon_stack: StackConfig, mon_broker: RabbitNode, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalPrometheus]:
    prom = LocalPrometheus(
        base_dir=tmp_path_factory.mktemp("prometheus"),
        api_url=mon_stack.api_base_url,
        broker_prometheus_url=mon_broker.prometheus_url,
        interval="1s",
    )
    with prom:
        prom.wait_scraped()
        yield prom
