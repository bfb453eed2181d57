"""The baseline endpoints, served by uvicorn exactly as the api is served.

``POST /api/tasks`` takes the api's submission body (the same model, so parsing
costs the same) and answers ``202`` with a task-shaped JSON object. What happens in
between depends on ``BENCH_MODE``:

- ``bare``: nothing, the cost of FastAPI and uvicorn alone;
- ``publish``: one persistent message, published with ``mandatory`` on a channel in
  confirm mode of one long-lived aio-pika connection; the answer waits for the
  broker's confirm (what the api does, minus the task store);
- ``naive``: the original system's way: a new pika connection, channel and queue
  declaration per request, one persistent message, then the connection is closed
  (a plain ``def`` endpoint, so requests run in FastAPI's thread pool).

Run with ``python -m bench.baseline_app``; ``BENCH_PORT`` is the port and
``RMQ_URL`` the broker. Logging and uvicorn's settings are the api's.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import aio_pika
import pika
import uvicorn
from aio_pika.abc import AbstractChannel
from fastapi import FastAPI, status

from tasklab_api.schemas import TaskCreate, TaskOut
from tasklab_common.models import TaskStatus
from tasklab_common.settings import BrokerSettings, setup_logging

__all__ = ["MODES", "NAIVE_QUEUE", "PUBLISH_QUEUE", "create_app", "main"]

MODES = ("bare", "publish", "naive")
PUBLISH_QUEUE = "bench.publish"
NAIVE_QUEUE = "bench.naive"


#: The api's own task answer.
Accepted = TaskOut


_numbers = itertools.count(1)


def _accepted(body: TaskCreate) -> Accepted:
    now = datetime.now(UTC)
    return Accepted(
        id=str(uuid.uuid4()),
        num=next(_numbers),
        method=body.method,
        kind=body.kind,
        status=TaskStatus.PENDING,
        params=body.params().model_dump(mode="json", exclude_none=True),
        result=None,
        error=None,
        worker=None,
        attempts=0,
        created_at=now,
        started_at=None,
        finished_at=None,
        updated_at=now,
    )


def _bare_app() -> FastAPI:
    app = FastAPI(title="bench: bare")

    @app.post("/api/tasks", status_code=status.HTTP_202_ACCEPTED)
    async def submit(body: TaskCreate) -> Accepted:
        return _accepted(body)

    return app


def _publish_app(url: str) -> FastAPI:
    channel: AbstractChannel | None = None

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        nonlocal channel
        connection = await aio_pika.connect(url)
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        await channel.declare_queue(PUBLISH_QUEUE, durable=True)
        try:
            yield
        finally:
            await connection.close()

    app = FastAPI(title="bench: confirmed publish", lifespan=lifespan)

    @app.post("/api/tasks", status_code=status.HTTP_202_ACCEPTED)
    async def submit(body: TaskCreate) -> Accepted:
        assert channel is not None
        task = _accepted(body)
        message = aio_pika.Message(
            body=task.model_dump_json().encode(),
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=task.id,
        )
        await channel.default_exchange.publish(message, routing_key=PUBLISH_QUEUE, mandatory=True)
        return task

    return app


def _naive_app(url: str) -> FastAPI:
    app = FastAPI(title="bench: naive (a connection per request)")

    @app.post("/api/tasks", status_code=status.HTTP_202_ACCEPTED)
    def submit(body: TaskCreate) -> Accepted:
        task = _accepted(body)
        connection = pika.BlockingConnection(pika.URLParameters(url))
        try:
            channel = connection.channel()
            channel.queue_declare(queue=NAIVE_QUEUE, durable=True)
            channel.basic_publish(
                exchange="",
                routing_key=NAIVE_QUEUE,
                body=task.model_dump_json().encode(),
                properties=pika.BasicProperties(
                    delivery_mode=pika.DeliveryMode.Persistent,
                    content_type="application/json",
                ),
            )
        finally:
            connection.close()
        return task

    return app


def create_app() -> FastAPI:
    """The app of ``BENCH_MODE`` (uvicorn factory)."""
    mode = os.environ.get("BENCH_MODE", "bare")
    url = BrokerSettings().amqp_url()
    if mode == "bare":
        return _bare_app()
    if mode == "publish":
        return _publish_app(url)
    if mode == "naive":
        return _naive_app(url)
    raise SystemExit(f"BENCH_MODE must be one of {', '.join(MODES)}, not {mode!r}")


def main() -> None:
    """Serve :func:`create_app` with the api's logging and uvicorn settings."""
    settings = BrokerSettings()
    setup_logging(settings)
    uvicorn.run(
        "bench.baseline_app:create_app",
        factory=True,
        host="127.0.0.1",
        port=int(os.environ["BENCH_PORT"]),
        log_config=None,
        proxy_headers=False,
        timeout_graceful_shutdown=10,
    )


if __name__ == "__main__":
    main()
