"""The Celery peers' app: a no-op task with the worker's reliability settings, and the
status tracking a user of plain Celery would turn on.

Our worker's at-least-once settings (``celery_conf.at_least_once``, as ``celery_app``
and the raw baseline use them: JSON, ``acks_late``, ``reject_on_worker_lost``,
prefetch 1, publisher confirms, a durable queue, persistent messages), plus
``task_track_started`` and the result backend named by ``BENCH_PEER_BACKEND`` (none
when empty: the Flower peer reads the worker's events instead, ``-E``).

The worker: ``celery -A bench.peerapp worker --concurrency=3 -Q bench.peer`` with
``BENCH_PEER_BROKER`` (a virtual host of its own on the private broker) and
``BENCH_PEER_BACKEND`` set; Flower: ``celery -A bench.peerapp flower``.
"""

from __future__ import annotations

import os
from typing import Final

from celery import Celery

from celery_conf import at_least_once

__all__ = ["NOOP", "PEER_QUEUE", "app", "configure", "noop"]

PEER_QUEUE: Final = "bench.peer"
NOOP: Final = "bench.peer.noop"


def configure(app: Celery, backend: str | None) -> Celery:
    """``app`` with the peers' settings and result ``backend`` (None: no backend)."""
    app.conf.update(at_least_once(PEER_QUEUE))
    app.conf.update(result_backend=backend or None, task_track_started=True)
    return app


app = configure(
    Celery(
        "bench-peer",
        broker=os.environ.get("BENCH_PEER_BROKER", "amqp://bench-peer-broker-not-set.invalid//"),
    ),
    os.environ.get("BENCH_PEER_BACKEND") or None,
)


@app.task(name=NOOP)
def noop() -> None:
    """Does nothing; its SUCCESS is stored in the backend (or sent as an event)."""
