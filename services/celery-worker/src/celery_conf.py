"""The Celery settings that make delivery at-least-once, in one place.

Used by the worker's app (``celery_app``) and by the benchmark's raw-Celery baseline,
so that the baseline measures Celery with exactly the worker's reliability settings.
Importing it reads no setting and creates no app.
"""

from __future__ import annotations

from typing import Any

from kombu import Exchange, Queue

__all__ = ["at_least_once"]


def at_least_once(queue: str) -> dict[str, Any]:
    """Celery configuration for consuming ``queue`` at least once (``conf.update``)."""
    return {
        # Messages: JSON only, as the api publishes them.
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        # One queue; durable with no arguments, as the api declares it.
        "task_queues": (
            Queue(
                queue, Exchange(queue, type="direct", durable=True), routing_key=queue, durable=True
            ),
        ),
        "task_default_queue": queue,
        "task_default_exchange": queue,
        "task_default_routing_key": queue,
        "task_default_delivery_mode": "persistent",
        # At least once: ack after the task ran, requeue when its process dies, take
        # one message at a time per process, and wait for confirms when publishing.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "broker_transport_options": {"confirm_publish": True},
        "broker_connection_retry_on_startup": True,
    }
