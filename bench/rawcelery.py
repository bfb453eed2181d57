"""Raw Celery: no-op tasks with the worker's reliability settings, nothing else.

The same settings as ``celery_app`` where they matter for speed and safety: JSON,
``acks_late``, ``reject_on_worker_lost``, prefetch 1, publisher confirms, a durable
queue, persistent messages, the ``rpc://`` result backend. No status reports, no
task store.

The worker: ``celery -A bench.rawcelery worker --loglevel=info --concurrency=N``
with ``BENCH_RMQ_URL`` set to the broker.
"""

from __future__ import annotations

import os
import time
from typing import Final

from celery import Celery
from kombu import Exchange, Queue

__all__ = ["RAW_QUEUE", "app", "noop", "stamp"]

RAW_QUEUE: Final = "bench.raw"

app = Celery(
    "bench-raw",
    broker=os.environ.get("BENCH_RMQ_URL", "amqp://bench-rmq-url-not-set.invalid:5672//"),
    backend="rpc://",
)
app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    result_accept_content=["json"],
    task_queues=(
        Queue(
            RAW_QUEUE,
            Exchange(RAW_QUEUE, type="direct", durable=True),
            routing_key=RAW_QUEUE,
            durable=True,
        ),
    ),
    task_default_queue=RAW_QUEUE,
    task_default_exchange=RAW_QUEUE,
    task_default_routing_key=RAW_QUEUE,
    task_default_delivery_mode="persistent",
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    broker_transport_options={"confirm_publish": True},
    broker_connection_retry_on_startup=True,
)


@app.task(name="bench.noop", ignore_result=True)
def noop() -> None:
    """Does nothing."""


@app.task(name="bench.stamp")
def stamp() -> float:
    """The wall-clock time at which the task ran (a result through ``rpc://``)."""
    return time.time()
