"""Publishing tasks to the broker: one long-lived connection per api process.

One channel in confirm mode carries every publish; messages are persistent and
``mandatory``, queues durable. ``publish`` returns only once the broker confirmed
the message, and raises :class:`BrokerUnavailable` fast when the broker is down,
refuses the message (a full queue with ``reject-publish``) or does not confirm in
time. The connection is re-established in the background.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from typing import Any

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractExchange
from celery import Celery
from celery.app.amqp import AMQP
from celery.utils.saferepr import saferepr
from kombu.serialization import dumps

from tasklab_common.messages import API_ORIGIN_PREFIX, CancelNotice, TaskMessage, celery_call
from tasklab_common.models import Method
from tasklab_common.queues import CANCEL_EXCHANGE, QUEUE_OF_METHOD

log = logging.getLogger("tasklab.publisher")


#: AMQP heartbeat of the api's connection, seconds.
HEARTBEAT = 15
#: Longest argument display strings in a Celery message's headers (Celery's own bound).
REPR_MAX: int = AMQP.argsrepr_maxsize
#: Arguments with a longer list (or string) are displayed by Celery's ``saferepr``.
_SHORT = 64


def _display(args: tuple[Any, ...] | dict[str, Any]) -> str:
    """The display copy of a Celery message's arguments (its ``argsrepr`` header, for
    logs and monitors), bounded as Celery bounds it. Small arguments, the usual case,
    go through the builtin ``repr`` (a sixth of the time of Celery's pure-Python
    ``saferepr``); a long list goes through ``saferepr``, which stops at the bound
    instead of printing every number first."""
    values = args.values() if isinstance(args, dict) else args
    if any(isinstance(v, list | tuple | dict | str) and len(v) > _SHORT for v in values):
        return saferepr(args, REPR_MAX)
    return repr(args)[:REPR_MAX]


class BrokerUnavailable(Exception):
    """The broker did not take the message; ``reason`` is safe to show."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Publisher:
    def __init__(
        self, url: str, *, publish_timeout: float = 5.0, connect_timeout: float = 5.0
    ) -> None:
        self._url = url
        self._publish_timeout = publish_timeout
        self._connect_timeout = connect_timeout
        self._connection: AbstractConnection | None = None
        self._channel: AbstractChannel | None = None
        self._cancels: AbstractExchange | None = None
        self._runner: asyncio.Task[None] | None = None
        self._closing = False
        self._connected = asyncio.Event()
        self._lost = asyncio.Event()
        # Builds Celery protocol-2 messages; never connects.
        self._celery = Celery("tasklab-api", set_as_current=False)
        self._celery.conf.task_serializer = "json"
        self._origin = f"{API_ORIGIN_PREFIX}{socket.gethostname()}"

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def start(self) -> None:
        self._runner = asyncio.create_task(self._run(), name="broker-connection")

    async def wait_connected(self, timeout: float) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._connected.wait(), timeout)
        return self.connected

    async def _run(self) -> None:
        delay = 0.2
        while not self._closing:
            try:
                await self._connect()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("broker connection failed (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            delay = 0.2
            log.info("connected to the broker")
            await self._lost.wait()
            self._lost.clear()
            self._connected.clear()
            if not self._closing:
                log.warning("broker connection lost; reconnecting")

    async def _connect(self) -> None:
        # A short AMQP heartbeat (unless the URL sets one): a hung broker is noticed
        # within about 30 s, and the api turns unready instead of timing out each publish.
        extra: dict[str, Any] = {} if "heartbeat=" in self._url else {"heartbeat": HEARTBEAT}
        conn = await aio_pika.connect(
            self._url,
            timeout=self._connect_timeout,
            client_properties={"connection_name": self._origin},
            **extra,
        )
        try:
            channel = await conn.channel(publisher_confirms=True, on_return_raises=True)
            for queue in sorted(set(QUEUE_OF_METHOD.values())):
                await channel.declare_queue(queue, durable=True)
            self._cancels = await channel.declare_exchange(
                CANCEL_EXCHANGE, aio_pika.ExchangeType.FANOUT, durable=True
            )
        except BaseException:
            await conn.close()
            raise
        conn.close_callbacks.add(self._on_close)
        channel.close_callbacks.add(self._on_close)
        self._connection, self._channel = conn, channel
        self._connected.set()

    def _on_close(self, *_args: Any) -> None:
        self._connected.clear()
        self._lost.set()

    async def close(self) -> None:
        self._closing = True
        self._lost.set()
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
        if self._connection is not None:
            with contextlib.suppress(Exception):
                await self._connection.close()

    async def publish_task(self, msg: TaskMessage) -> None:
        """Publish a task for its method's workers; return once confirmed."""
        if msg.method is Method.RABBITMQ:
            message = aio_pika.Message(
                body=msg.model_dump_json().encode(),
                content_type="application/json",
                content_encoding="utf-8",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                message_id=msg.task_id,
                app_id="tasklab-api",
            )
        else:
            message = self._celery_message(msg)
        await self._publish(message, QUEUE_OF_METHOD[msg.method])

    async def publish_cancel(self, task_id: str) -> None:
        """Tell the consumers that a direct-queue task was cancelled (a
        :class:`~tasklab_common.messages.CancelNotice` on their fanout exchange); return
        once confirmed. Transient and not ``mandatory``: with no consumer connected no
        task runs, and there is nothing to stop."""
        message = aio_pika.Message(
            body=CancelNotice(task_id=task_id).model_dump_json().encode(),
            content_type="application/json",
            app_id="tasklab-api",
        )
        await self._publish(message, "", to=self._cancels, mandatory=False)

    def _celery_message(self, msg: TaskMessage) -> aio_pika.Message:
        name, args, kwargs = celery_call(msg)
        call_args = tuple(args)
        tm = self._celery.amqp.as_task_v2(
            msg.task_id,
            name,
            call_args,
            kwargs,
            origin=self._origin,
            create_sent_event=False,
            # The api follows its tasks through the status callbacks, not Celery's result
            # backend: the worker need not try to store a result.
            ignore_result=True,
            argsrepr=_display(call_args),
            kwargsrepr=_display(kwargs),
        )
        content_type, encoding, payload = dumps(tm.body, serializer="json")
        body: bytes | str = payload  # str or bytes, depending on the kombu version
        if isinstance(body, str):
            body = body.encode(encoding)
        headers = {k: list(v) if isinstance(v, tuple) else v for k, v in tm.headers.items()}
        return aio_pika.Message(
            body=body,
            headers=headers,
            content_type=content_type,
            content_encoding=encoding,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            correlation_id=msg.task_id,
            priority=0,
            app_id="tasklab-api",
        )

    async def _publish(
        self,
        message: aio_pika.Message,
        routing_key: str,
        *,
        to: AbstractExchange | None = None,
        mandatory: bool = True,
    ) -> None:
        """Publish to exchange ``to`` (the default exchange: a queue's name as the key)
        and wait for the broker's confirm; :class:`BrokerUnavailable` when it fails."""
        channel = self._channel
        if not self.connected or channel is None or channel.is_closed:
            raise BrokerUnavailable("broker unavailable")
        exchange = to or channel.default_exchange
        try:
            async with asyncio.timeout(self._publish_timeout):
                await exchange.publish(message, routing_key=routing_key, mandatory=mandatory)
        except aiormq.exceptions.PublishError as exc:  # returned: no queue to route to
            raise BrokerUnavailable("broker refused the task (no queue)") from exc
        except aiormq.exceptions.DeliveryError as exc:  # nacked, e.g. a full queue
            raise BrokerUnavailable("broker refused the task (queue full)") from exc
        except TimeoutError:
            raise BrokerUnavailable("broker did not confirm in time") from None
        except (aiormq.exceptions.AMQPError, ConnectionError, RuntimeError) as exc:
            self._on_close()
            raise BrokerUnavailable(f"broker unavailable ({type(exc).__name__})") from exc
