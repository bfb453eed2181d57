"""Raw Celery: no-op tasks with the worker's reliability settings, nothing else.

The worker's own at-least-once settings (``celery_conf.at_least_once``, which
``celery_app`` uses too): JSON, ``acks_late``, ``reject_on_worker_lost``, prefetch 1,
publisher confirms, a durable queue, persistent messages; the ``rpc://`` result
backend. No status reports, no task store.

The worker: ``celery -A bench.rawcelery worker --loglevel=info --concurrency=N``
with ``BENCH_RMQ_URL`` set to the broker.
"""

from __future__ import annotations

import os
import time
from typing import Final

from celery import Celery

from celery_conf import at_least_once

__all__ = ["RAW_QUEUE", "app", "noop", "stamp", "stamp_file"]

RAW_QUEUE: Final = "bench.raw"

app = Celery(
    "bench-raw",
    broker=os.environ.get("BENCH_RMQ_URL", "amqp://bench-rmq-url-not-set.invalid:5672//"),
    backend="rpc://",
)
app.conf.update(at_least_once(RAW_QUEUE))


@app.task(name="bench.noop", ignore_result=True)
def noop() -> None:
    """Does nothing."""


@app.task(name="bench.stamp")
def stamp() -> float:
    """The wall-clock time at which the task ran (a result through ``rpc://``)."""
    return time.time()


@app.task(name="bench.stamp_file", ignore_result=True)
def stamp_file(path: str) -> None:
    """Write the wall-clock time at which the task ran to ``path`` (no result backend:
    the worker-rate measurement must not depend on a reply reaching the client)."""
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="ascii") as out:
        out.write(repr(time.time()))
    os.replace(tmp, path)
