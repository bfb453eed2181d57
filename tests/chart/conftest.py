"""Offline checks of the Helm chart (deploy/helm/tasklab): no cluster is needed.

The chart is rendered once per value set (the sets kept in the chart's ci/ folder and
the variants of `make kind-up`) with the pinned helm of .tools/ (scripts/k8s-tools.sh
installs it; the session fixture runs it, which is quick when all is there).

The broker fixtures run the rendered RabbitMQ configuration on a real local node
(test_broker*.py): the broker pod's setup script writes the node's files from the
rendered ConfigMap and Secrets, and the services run against it each as its own broker
user, the workers calling the api's internal port, as the chart wires them.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from tasklab_devtools import chart
from tasklab_devtools.chart import Obj
from tasklab_devtools.rabbitmq import ensure_rabbitmq_server
from tasklab_devtools.rabbitmq_conf import ConfiguredRabbitNode
from tasklab_devtools.stack import LocalStack, StackConfig
from tasklab_devtools.testing.stacks import stack_config


@pytest.fixture(scope="session")
def tools() -> None:
    chart.install_tools()


@pytest.fixture(scope="session")
def rendered(tools: None) -> dict[str, list[Obj]]:
    """Value set name -> the rendered objects."""
    return chart.render_all(chart.value_sets())


@pytest.fixture(scope="session")
def default_docs(rendered: dict[str, list[Obj]]) -> list[Obj]:
    return rendered["default"]


@pytest.fixture(scope="session")
def setup_output(
    default_docs: list[Obj], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    """Runs the broker pod's setup script (its init container) on the rendered files,
    with the values of the rendered Secrets (the administrator's, the Erlang cookie and
    each service's user) as the kubelet would give them, into temporary directories."""
    base = tmp_path_factory.mktemp("setup")
    dirs = {name: base / name for name in ("config", "secret", "etc", "data")}
    for path in dirs.values():
        path.mkdir()
    (config,) = chart.find(default_docs, "ConfigMap", "rabbitmq-config")
    for key, text in config["data"].items():
        (dirs["config"] / key).write_text(text)
    cookie = chart.secret_value(default_docs, "rabbitmq", "erlang-cookie")
    (dirs["secret"] / "erlang-cookie").write_text(cookie)
    (sts,) = chart.find(default_docs, "StatefulSet", "rabbitmq")
    (setup,) = sts["spec"]["template"]["spec"]["initContainers"]
    assert setup["command"][:2] == ["bash", "-ec"]
    env = {
        **os.environ,
        **{f"{name.upper()}_DIR": str(path) for name, path in dirs.items()},
        **chart.container_env(default_docs, setup),
    }
    subprocess.run(["bash", "-ec", setup["command"][2]], env=env, check=True, timeout=30)
    return dirs


@pytest.fixture(scope="session")
def broker_logins(default_docs: list[Obj]) -> dict[str, tuple[str, str]]:
    """``{key: (user, password)}`` of each broker user the chart generated: the
    administrator ("admin") and one per service and KEDA (rabbitmq-users)."""
    logins = {
        "admin": (
            chart.secret_value(default_docs, "rabbitmq", "username"),
            chart.secret_value(default_docs, "rabbitmq", "password"),
        )
    }
    for key in (*chart.BROKER_CLIENTS, "keda"):
        logins[key] = (
            chart.secret_value(default_docs, "rabbitmq-users", f"{key}-username"),
            chart.secret_value(default_docs, "rabbitmq-users", f"{key}-password"),
        )
    return logins


@pytest.fixture(scope="session")
def node(
    setup_output: dict[str, Path],
    broker_logins: dict[str, tuple[str, str]],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ConfiguredRabbitNode]:
    ensure_rabbitmq_server()
    etc = setup_output["etc"]
    conf_d = sorted((etc / "conf.d").glob("*.conf"))
    broker = ConfiguredRabbitNode.allocate_configured(
        "tasklab-chart",
        tmp_path_factory.mktemp("rabbitmq"),
        conf="\n".join(p.read_text() for p in conf_d),
        definitions=(etc / "definitions.json").read_text(),
        enabled_plugins=(etc / "enabled_plugins").read_text(),
    )
    # The administrator the setup script put into the definitions.
    broker.user, broker.password = broker_logins["admin"]
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


def local_url(url: str, node: ConfiguredRabbitNode) -> str:
    """A rendered AMQP URL (host rabbitmq.<namespace>.svc) pointed at the local node."""
    parts = urlsplit(url)
    assert parts.hostname == f"rabbitmq.{chart.NAMESPACE}.svc", url
    netloc = f"{parts.netloc.rpartition('@')[0]}@127.0.0.1:{node.amqp_port}"
    return urlunsplit(parts._replace(netloc=netloc))


@pytest.fixture(scope="session")
def service_urls(default_docs: list[Obj], node: ConfiguredRabbitNode) -> dict[str, str]:
    """Each service's RMQ_URL as the chart composes it, pointed at the local node."""
    urls = {}
    for name in chart.BROKER_CLIENTS:
        (deployment,) = chart.find(default_docs, "Deployment", name)
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        urls[name] = local_url(chart.container_env(default_docs, container)["RMQ_URL"], node)
    return urls


@pytest.fixture(scope="session")
def local_stack(
    node: ConfiguredRabbitNode,
    service_urls: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[LocalStack]:
    """The api, the Celery worker and the consumer, each with its own broker user; the
    workers report to the api's internal port (API_INTERNAL_PORT), as in the chart."""
    cfg = replace(
        stack_config(node, tmp_path_factory.mktemp("stack"), "logs-chart", internal_port=True),
        rmq_url=service_urls["api"],
        rmq_urls=service_urls,
    )
    local = LocalStack(cfg)
    local.start()
    try:
        yield local
    finally:
        local.stop()


@pytest.fixture(scope="session")
def stack(local_stack: LocalStack) -> StackConfig:
    return local_stack.cfg
