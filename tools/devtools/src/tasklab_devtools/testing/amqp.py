"""A vhost of a real broker, seen as the api sees it: publish tasks and cancel notices
to it, read its direct queue, and (on a node of the tests' own) close its connections.

It speaks AMQP (pika) from outside, as the api does, to any broker URL (a private
node's vhost, or ``TASKLAB_TEST_RMQ_URL``); :class:`~tasklab_devtools.rabbitmq.RabbitNode`
is the node itself and its management API.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pika
from pika.adapters.blocking_connection import BlockingConnection
from pika.exchange_type import ExchangeType

from tasklab_common.messages import CancelNotice
from tasklab_common.queues import CANCEL_EXCHANGE, DIRECT_QUEUE
from tasklab_devtools.rabbitmq import RabbitNode, private_node

__all__ = ["BrokerVhost", "broker_vhost"]


@contextlib.contextmanager
def broker_vhost(name: str, base_dir: Path) -> Iterator[BrokerVhost]:
    """The tests' broker: ``TASKLAB_TEST_RMQ_URL`` when set (its vhost must exist), else
    vhost ``name`` on a private node of their own (node ``tasklab-<name>``, data under
    ``base_dir``), stopped at exit."""
    url = os.environ.get("TASKLAB_TEST_RMQ_URL")
    if url:
        yield BrokerVhost(url)
        return
    with private_node(f"tasklab-{name}", base_dir) as node, node.vhost(name) as vhost_url:
        yield BrokerVhost(vhost_url, node)


class BrokerVhost:
    """A vhost on a real broker, holding the direct queue the consumer reads (``node``:
    the private node it is on, when the tests started one)."""

    def __init__(self, url: str, node: RabbitNode | None = None) -> None:
        self.url = url
        self.node = node
        self.vhost = unquote(urlsplit(url).path[1:]) or "/"

    def connect(self) -> BlockingConnection:
        """A new connection of the test itself (not the consumer's)."""
        return BlockingConnection(pika.URLParameters(self.url))

    def publish(self, body: bytes) -> None:
        """Publish a persistent message to the direct queue, as the api does."""
        connection = self.connect()
        try:
            channel = connection.channel()
            channel.queue_declare(DIRECT_QUEUE, durable=True)
            channel.confirm_delivery()
            channel.basic_publish(
                "",
                DIRECT_QUEUE,
                body,
                pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent),
                mandatory=True,
            )
        finally:
            connection.close()

    def publish_cancel(self, task_id: str) -> None:
        """Publish the api's cancel notice of a task to every consumer."""
        connection = self.connect()
        try:
            channel = connection.channel()
            channel.exchange_declare(CANCEL_EXCHANGE, ExchangeType.fanout, durable=True)
            channel.basic_publish(
                CANCEL_EXCHANGE, "", CancelNotice(task_id=task_id).model_dump_json().encode()
            )
        finally:
            connection.close()

    def ready_messages(self) -> int:
        """Messages waiting in the direct queue (unacked ones are not counted)."""
        connection = self.connect()
        try:
            declared = connection.channel().queue_declare(DIRECT_QUEUE, durable=True)
            return int(declared.method.message_count or 0)
        finally:
            connection.close()

    def purge(self) -> None:
        """Empty the direct queue, declaring it first if needed."""
        connection = self.connect()
        try:
            channel = connection.channel()
            channel.queue_declare(DIRECT_QUEUE, durable=True)
            channel.queue_purge(DIRECT_QUEUE)
        finally:
            connection.close()

    def close_all_connections(self) -> None:
        """Have the broker close every connection of the vhost by force (needs
        :attr:`node`: a broker of the tests' own)."""
        if self.node is None:
            raise RuntimeError("closing connections by force needs the tests' own broker node")
        self.node.rabbitmqctl(
            "close_all_connections", "-p", self.vhost, "consumer test: forced close"
        )
