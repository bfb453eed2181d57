"""The observability suite's fixtures: the real stack, scraped by a real Prometheus."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tasklab_devtools.prometheus import LocalPrometheus
from tasklab_devtools.rabbitmq import RabbitNode, private_node
from tasklab_devtools.stack import LocalStack, StackConfig
from tasklab_devtools.testing.stacks import stack_config


@pytest.fixture(scope="session")
def mon_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitNode]:
    with private_node("tasklab-mon", tmp_path_factory.mktemp("rabbitmq")) as node:
        yield node


@pytest.fixture(scope="session")
def mon_stack(
    mon_broker: RabbitNode, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[StackConfig]:
    cfg = stack_config(
        mon_broker,
        tmp_path_factory.mktemp("stack"),
        "logs-monitoring",
        {"RETRY_BACKOFF": "0.2", "RETRY_BACKOFF_MAX": "1", "MAX_RETRIES": "2"},
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
