"""A real private RabbitMQ node: start, login, queue counts, crash, restart, stop."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tasklab_devtools.rabbitmq import (
    CONSUMER_TIMEOUT_MS,
    AmqpLoginError,
    RabbitNode,
    check_amqp_login,
    ensure_rabbitmq_server,
    rabbitmq_server_path,
)

pytestmark = pytest.mark.skipif(
    rabbitmq_server_path() is None, reason="rabbitmq-server is not installed"
)

QUEUE = "devtools_test"


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitNode]:
    rabbit = RabbitNode.allocate("tasklab-test", tmp_path_factory.mktemp("rabbit"))
    rabbit.start()
    yield rabbit
    rabbit.stop()


def node_vms(rabbit: RabbitNode) -> list[int]:
    """Pids of Erlang VMs running this node (found by their environment)."""
    found = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            environ = Path(f"/proc/{entry}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        ours = f"RABBITMQ_NODENAME={rabbit.name}".encode() in environ
        if ours and Path(f"/proc/{entry}/comm").read_text().strip() == "beam.smp":
            found.append(int(entry))
    return found


def listening_addresses(port: int) -> set[str]:
    """Local addresses (hex, as in /proc/net/tcp*) listening on ``port``."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:
                found.add(address)
    return found


def port_accepts(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def publish(rabbit: RabbitNode, queue: str, count: int) -> None:
    for number in range(count):
        reply = rabbit.api(
            "POST",
            "api/exchanges/%2F/amq.default/publish",
            json={
                "properties": {"delivery_mode": 2},
                "routing_key": queue,
                "payload": f"message {number}",
                "payload_encoding": "string",
            },
        )
        assert reply.json() == {"routed": True}


def test_rabbitmq_server_is_there() -> None:
    ensure_rabbitmq_server()  # installed: nothing to do


def test_node_is_private_and_accepts_only_its_user(node: RabbitNode) -> None:
    print(f"node start took {node.start_seconds:.1f} s")
    user, password = node.credentials
    assert password and user == "tasklab"
    assert node.amqp_url == f"amqp://{user}:{password}@127.0.0.1:{node.amqp_port}/"
    whoami = node.api("GET", "api/whoami").json()
    assert whoami["name"] == user
    assert "administrator" in whoami["tags"]
    assert [entry["name"] for entry in node.api("GET", "api/users").json()] == [user]
    assert node.api("GET", "api/overview").json()["node"] == node.name
    # The chart's consumer timeout, above the longest task (RabbitMQ's default is not).
    timeout = node.rabbitmqctl("eval", "application:get_env(rabbit, consumer_timeout).")
    assert timeout.strip() == f"{{ok,{CONSUMER_TIMEOUT_MS}}}"

    check_amqp_login(node.amqp_url)
    with pytest.raises(AmqpLoginError, match="ACCESS_REFUSED"):
        check_amqp_login(node.amqp_url.replace(password, "wrong-password"))
    with pytest.raises(AmqpLoginError, match="ACCESS_REFUSED"):
        check_amqp_login(f"amqp://guest:guest@127.0.0.1:{node.amqp_port}/")

    loopback = {"0100007F", "0000000000000000FFFF00000100007F"}
    for port in (node.amqp_port, node.mgmt_port, node.prometheus_port, node.dist_port):
        assert listening_addresses(port), port
        assert listening_addresses(port) <= loopback, port
    metrics = httpx.get(f"{node.prometheus_url}metrics", timeout=10)
    assert "rabbitmq_" in metrics.text


def test_queue_counts_and_purge(node: RabbitNode) -> None:
    created = node.api("PUT", f"api/queues/%2F/{QUEUE}", json={"durable": True})
    assert created.status_code in (201, 204)
    node.wait_queue_counts(QUEUE, 0, 0, timeout=10)
    publish(node, QUEUE, 3)
    node.wait_queue_counts(QUEUE, 3, 0, timeout=15)
    assert node.queue_counts(QUEUE) == (3, 0)
    node.purge(QUEUE)
    node.wait_queue_counts(QUEUE, 0, 0, timeout=15)
    with pytest.raises(TimeoutError, match="expected"):
        node.wait_queue_counts(QUEUE, 1, 0, timeout=0.5)


def test_kill_then_start_again_keeps_data_and_credentials(node: RabbitNode) -> None:
    publish(node, QUEUE, 2)
    node.wait_queue_counts(QUEUE, 2, 0, timeout=15)
    url = node.amqp_url

    node.kill()
    assert not node.is_running()
    assert node_vms(node) == []
    assert not port_accepts(node.amqp_port)
    assert not port_accepts(node.mgmt_port)
    with pytest.raises(ConnectionRefusedError):
        check_amqp_login(url, timeout=2)

    node.start()
    print(f"start after a crash took {node.start_seconds:.1f} s")
    assert node.amqp_url == url
    check_amqp_login(url)
    node.wait_queue_counts(QUEUE, 2, 0, timeout=15)  # durable queue, persistent messages
    node.purge(QUEUE)


def test_a_left_over_node_is_replaced_and_a_new_password_applied(node: RabbitNode) -> None:
    # A second object for the same node directory, as after a crashed earlier run whose
    # node kept running, must take over instead of failing on the busy name and ports;
    # and a directory created with another password gets the new one.
    old_vms = node_vms(node)
    assert len(old_vms) == 1
    twin = RabbitNode(
        node.name,
        node.base_dir,
        node.amqp_port,
        node.mgmt_port,
        node.prometheus_port,
        node.dist_port,
        password="another-password",
    )
    twin.start()
    try:
        assert not node.is_running()
        new_vms = node_vms(twin)
        assert len(new_vms) == 1
        assert new_vms != old_vms
        check_amqp_login(twin.amqp_url)
        with pytest.raises(AmqpLoginError, match="ACCESS_REFUSED"):
            check_amqp_login(node.amqp_url)
        assert [entry["name"] for entry in twin.api("GET", "api/users").json()] == ["tasklab"]
    finally:
        began = time.monotonic()
        twin.stop()
        print(f"graceful stop took {time.monotonic() - began:.1f} s")
    assert node_vms(twin) == []
    assert not port_accepts(twin.amqp_port)
