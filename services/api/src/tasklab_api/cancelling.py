"""Stopping a cancelled task on the worker that runs it.

The store marks the task ``CANCELLED`` first (final: no report can move it again, and
a worker that asks before it starts is told not to proceed). What stops a task
already on a worker depends on who runs it:

- Celery (methods ``celery`` and ``sync``): a Celery revoke, broadcast to every worker
  through Celery's remote control (its ``celery.pidbox`` fanout exchange). A worker
  keeps the id among its revoked tasks, so a message still in the queue is dropped on
  arrival; with ``terminate`` (the task was started) the worker also sends SIGTERM to
  the pool process running it, and acknowledges its message as revoked.
- The consumer (method ``rabbitmq``), once the task was started: a cancel notice on
  the fanout exchange ``tasklab.cancel``, which every consumer reads; the one running
  the task interrupts its work within a fraction of a second and acknowledges its
  message (see :mod:`tasklab_common.protocol`). A task not started yet needs nothing:
  its worker's first report is answered "do not proceed", and it is skipped.
"""

from __future__ import annotations

import asyncio
import logging

from celery import Celery

from tasklab_api.config import Settings
from tasklab_api.publisher import BrokerUnavailable, Publisher
from tasklab_api.store import CancelResult
from tasklab_common.models import Method

log = logging.getLogger("tasklab.api")


class Canceller:
    """Tells the workers to stop a task the store has just cancelled (best effort,
    bounded: the task is CANCELLED in the store either way)."""

    def __init__(self, settings: Settings, publisher: Publisher) -> None:
        self._publisher = publisher
        self._timeout = settings.revoke_timeout
        self._control = Celery(
            "tasklab-api-control", broker=settings.amqp_url(), set_as_current=False
        )
        self._control.conf.broker_connection_timeout = settings.revoke_timeout
        self._control.conf.broker_connection_max_retries = 1

    async def stop(self, cancelled: CancelResult) -> None:
        task = cancelled.task
        if Method(task.method).runs_on_celery:
            await self._revoke(task.id, terminate=cancelled.was_running)
        elif cancelled.was_running:
            await self._notify_consumers(task.id)

    async def _notify_consumers(self, task_id: str) -> None:
        try:
            await self._publisher.publish_cancel(task_id)
        except BrokerUnavailable as exc:
            log.warning("could not tell the consumers to stop task %s: %s", task_id, exc.reason)

    async def _revoke(self, task_id: str, *, terminate: bool) -> None:
        """Revoke a Celery task (terminating it if it runs)."""
        try:
            await asyncio.wait_for(
                asyncio.to_thread(
                    self._control.control.revoke, task_id, terminate=terminate, signal="SIGTERM"
                ),
                self._timeout,
            )
        except Exception as exc:
            log.warning("could not revoke Celery task %s: %s: %s", task_id, type(exc).__name__, exc)

    def close(self) -> None:
        self._control.close()
