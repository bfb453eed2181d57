"""The pika side: connection, reconnection, worker threads and acknowledgements.

The main thread is the connection's I/O thread: it only moves frames (so heartbeats
keep flowing during long tasks) and settles deliveries. Tasks run in a pool of
``CONSUMER_CONCURRENCY`` threads, as many as the channel's prefetch count; a
redelivered message runs alone (see :mod:`tasklab_consumer.gate`); a message this
consumer gives back itself goes back as a fresh copy, so that it is not taken for one
that crashed a consumer (:meth:`Session.give_back`). A worker
thread hands its outcome back with ``add_callback_threadsafe`` to the connection the
message came from; after a reconnection, deliveries of the old connection are never
settled on the new channel (delivery tags belong to one channel): the broker
redelivers them instead.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pika
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection
from pika.adapters.utils.connection_workflow import AMQPConnectorException
from pika.exceptions import AMQPChannelError, AMQPError, ConsumerCancelled
from pika.exchange_type import ExchangeType
from pika.spec import Basic, BasicProperties

from tasklab_common.heartbeat import Heartbeat
from tasklab_common.queues import CANCEL_EXCHANGE, DIRECT_QUEUE
from tasklab_common.work import retry_delay
from tasklab_consumer.cancels import CancelBoard
from tasklab_consumer.gate import RunGate
from tasklab_consumer.processing import Settlement, TaskRunner
from tasklab_consumer.settings import ConsumerSettings
from tasklab_consumer.shutdown import POLL_SECONDS, Shutdown

log = logging.getLogger("tasklab.consumer")

#: Failures that end one connection; the consumer then connects again. pika's
#: connection workflow raises its own exceptions (not AMQPError) when a broker accepts
#: the TCP connection but never completes the AMQP handshake (a hung broker).
RECOVERABLE = (AMQPError, OSError, AMQPConnectorException)


def connection_parameters(settings: ConsumerSettings) -> pika.URLParameters:
    """Broker parameters: the URL, our heartbeat and a connection name."""
    params = pika.URLParameters(settings.amqp_url())
    params.heartbeat = settings.consumer_heartbeat
    params.connection_attempts = 1  # the reconnect loop does the retrying
    params.client_properties = {"connection_name": settings.consumer_name}
    return params


def describe_failure(exc: BaseException) -> str:
    """``Type: reason`` of a connection failure.

    Some pika exceptions print as an empty string and keep the reason in their
    arguments (e.g. the refused socket connection), so those are shown instead.
    """
    details = str(exc) or ", ".join(repr(arg) for arg in exc.args) or "no details"
    return f"{type(exc).__name__}: {details}"


@dataclass(frozen=True)
class Delivery:
    """One message as the broker delivered it on a session's channel."""

    tag: int
    properties: BasicProperties
    body: bytes
    redelivered: bool


class Session:
    """One connection, its consuming channel and its publishing channel (with publisher
    confirms), with the deliveries not settled on it yet."""

    def __init__(
        self, connection: BlockingConnection, channel: BlockingChannel, publisher: BlockingChannel
    ) -> None:
        self.connection = connection
        self.channel = channel
        self.publisher = publisher
        self.unsettled = 0  # touched by the I/O thread only

    def settle_threadsafe(self, delivery: Delivery, outcome: Settlement) -> None:
        """From a worker thread: settle a delivery on the I/O thread, if still possible."""
        try:
            self.connection.add_callback_threadsafe(
                functools.partial(self._settle, delivery, outcome)
            )
        except AMQPError:
            log.warning(
                "connection lost before a delivery could be settled (%s); the broker redelivers it",
                outcome.value,
            )

    def _settle(self, delivery: Delivery, outcome: Settlement) -> None:
        """On the I/O thread: ack, reject or give back a delivery of this channel."""
        self.unsettled -= 1
        try:
            if outcome is Settlement.ACK:
                self.channel.basic_ack(delivery.tag)
            elif outcome is Settlement.REJECT:
                self.channel.basic_reject(delivery.tag, requeue=False)
            else:
                self.give_back(delivery)
        except AMQPError as exc:
            log.warning(
                "could not %s a delivery (%s); the broker redelivers it", outcome.value, exc
            )

    def give_back(self, delivery: Delivery) -> None:
        """Put back in the queue a message this consumer did not finish (handed back at
        a stop, not started before one, its report undeliverable): a copy is published,
        and once the broker confirms it, the delivery is acknowledged.

        Requeued as it was, the message would come back flagged redelivered, like those
        of a consumer that crashed, and each would wait to run alone (after every
        scale-down, the tasks handed back would run one by one, a minute apart). The
        copy is a first delivery; it is flagged redelivered only if a consumer dies
        while it runs. When the copy is not confirmed, the delivery is requeued as it
        was; when the ack is lost after the copy, the task runs twice (at least once).
        """
        try:
            self.publisher.basic_publish(
                "", DIRECT_QUEUE, delivery.body, delivery.properties, mandatory=True
            )
        except AMQPChannelError as exc:  # refused or unroutable: the connection lives on
            log.warning("could not put a copy back in the queue (%s); requeueing it", exc)
            self.channel.basic_nack(delivery.tag, requeue=True)
            return
        self.channel.basic_ack(delivery.tag)

    def close(self) -> None:
        """Close the connection; its unsettled deliveries go back to the queue."""
        close_quietly(self.connection)


def close_quietly(connection: BlockingConnection) -> None:
    """Close a connection, ignoring one that is already gone."""
    if connection.is_open:
        try:
            connection.close()
        except AMQPError as exc:
            log.debug("closing the connection failed: %s", exc)


class Consumer:
    """Consumes the direct queue until a shutdown, reconnecting when the broker is lost."""

    def __init__(
        self,
        settings: ConsumerSettings,
        runner: TaskRunner,
        shutdown: Shutdown,
        cancels: CancelBoard,
    ) -> None:
        self._settings = settings
        self._runner = runner
        self._shutdown = shutdown
        self._cancels = cancels
        self._params = connection_parameters(settings)
        self._failures = 0
        self._heartbeat = Heartbeat(settings.heartbeat_file)
        self._gate = RunGate(shutdown, settings.consumer_isolation_wait)

    def run(self) -> None:
        """Serve connections one after another until a shutdown is requested."""
        threads = self._settings.consumer_concurrency
        self._heartbeat.beat(force=True)
        try:
            with ThreadPoolExecutor(threads, thread_name_prefix="task") as pool:
                while not self._shutdown.requested:
                    try:
                        self._serve(pool)
                    except RECOVERABLE as exc:
                        self._back_off(exc)
        finally:
            self._heartbeat.stop()
        log.info("consumer stopped")

    def _back_off(self, exc: BaseException) -> None:
        """Log a lost connection and wait before the next one (unless shutting down)."""
        problem = describe_failure(exc)
        if self._shutdown.requested:
            log.warning("broker connection lost during shutdown (%s)", problem)
            return
        delay = retry_delay(
            self._failures, self._settings.reconnect_backoff, self._settings.reconnect_backoff_max
        )
        self._failures += 1
        log.warning(
            "broker connection lost or unavailable (%s); reconnecting in %.1fs", problem, delay
        )
        # Short waits, so the heartbeat goes on while the broker is away.
        deadline = time.monotonic() + delay
        while not self._shutdown.wait(min(1.0, max(0.0, deadline - time.monotonic()))):
            self._heartbeat.beat()
            if time.monotonic() >= deadline:
                break

    def _serve(self, pool: ThreadPoolExecutor) -> None:
        """One connection's lifetime: consume until a shutdown, then drain and close."""
        session = self._open()
        try:
            consumer_tag = session.channel.basic_consume(
                DIRECT_QUEUE, functools.partial(self._on_message, session, pool)
            )
            self._failures = 0
            log.info(
                "connected; consuming %s with %d worker threads as %s",
                DIRECT_QUEUE,
                self._settings.consumer_concurrency,
                self._settings.consumer_name,
            )
            self._pump(session, until=lambda: self._shutdown.requested)
            self._drain(session, consumer_tag)
        finally:
            session.close()

    def _open(self) -> Session:
        """Connect, declare the queue as the api does, set the prefetch count, and
        listen for cancel notices (before any task is delivered)."""
        connection = BlockingConnection(self._params)
        try:
            channel = connection.channel()
            channel.queue_declare(DIRECT_QUEUE, durable=True)
            channel.basic_qos(prefetch_count=self._settings.consumer_concurrency)
            channel.add_on_cancel_callback(self._on_cancelled)
            self._listen_for_cancels(channel)
            publisher = connection.channel()
            publisher.confirm_delivery()
        except BaseException:
            close_quietly(connection)
            raise
        return Session(connection, channel, publisher)

    def _listen_for_cancels(self, channel: BlockingChannel) -> None:
        """Bind a queue of this connection's own (exclusive, auto-delete, named by the
        broker) to the api's cancel notices, and read it without acknowledgements."""
        channel.exchange_declare(CANCEL_EXCHANGE, ExchangeType.fanout, durable=True)
        declared = channel.queue_declare("", exclusive=True, auto_delete=True)
        notices = declared.method.queue
        channel.queue_bind(notices, CANCEL_EXCHANGE)
        channel.basic_consume(
            notices, lambda _ch, _method, _props, body: self._cancels.on_notice(body), auto_ack=True
        )

    @staticmethod
    def _on_cancelled(_frame: object) -> None:
        """The broker cancelled our consumer (e.g. the queue was deleted)."""
        raise ConsumerCancelled("the broker cancelled the consumer")

    def _pump(self, session: Session, until: Callable[[], bool]) -> None:
        """Process I/O, deliveries and settlements until ``until()`` is true."""
        while not until():
            session.connection.process_data_events(time_limit=POLL_SECONDS)
            self._heartbeat.beat()

    def _drain(self, session: Session, consumer_tag: str) -> None:
        """Stop consuming, wait for this session's tasks to be settled."""
        session.channel.basic_cancel(consumer_tag)
        if session.unsettled:
            log.info("shutting down: waiting for %d task(s) to finish", session.unsettled)
        self._pump(session, until=lambda: session.unsettled == 0)

    def _on_message(
        self,
        session: Session,
        pool: ThreadPoolExecutor,
        _channel: BlockingChannel,
        method: Basic.Deliver,
        properties: BasicProperties,
        body: bytes,
    ) -> None:
        """On the I/O thread: hand a delivery to a worker thread."""
        assert method.delivery_tag is not None, "a Basic.Deliver always carries a delivery tag"
        session.unsettled += 1
        delivery = Delivery(method.delivery_tag, properties, body, bool(method.redelivered))
        pool.submit(self._work, session, delivery)

    def _work(self, session: Session, delivery: Delivery) -> None:
        """In a worker thread: process one delivery and settle it."""
        outcome = Settlement.REQUEUE
        with self._gate.slot(alone=delivery.redelivered) as entry:
            # Not started before a shutdown: give it back, another consumer will run it.
            if entry is not None:
                outcome = self._handle(delivery.body)
        session.settle_threadsafe(delivery, outcome)

    def _handle(self, body: bytes) -> Settlement:
        """The runner's outcome; a bug must not lose the message nor kill the thread."""
        try:
            return self._runner.handle(body)
        except Exception:
            log.exception("unexpected error while processing a message; requeueing it")
            return Settlement.REQUEUE
