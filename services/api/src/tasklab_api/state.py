"""The api process's long-lived objects, and what happens when a task changes."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from celery import Celery

from tasklab_api.brokerstats import BrokerStats, EmptyQueues
from tasklab_api.config import Settings
from tasklab_api.events import EventHub
from tasklab_api.limits import RateLimiter
from tasklab_api.orm import Task
from tasklab_api.publisher import Publisher
from tasklab_api.store import TaskStore
from tasklab_api.workloads import ClusterView

log = logging.getLogger("tasklab.api")


@dataclass
class AppState:
    settings: Settings
    store: TaskStore
    publisher: Publisher
    hub: EventHub
    limiter: RateLimiter
    control: Celery
    postgres: bool
    broker_stats: BrokerStats
    cluster: ClusterView
    #: What housekeeping saw of the queues (see routers.maintenance).
    empty_queues: EmptyQueues = field(default_factory=EmptyQueues)

    async def announce(self, task: Task, *, notified: bool = False) -> None:
        """Tell live subscribers of every api process that ``task`` changed.

        On PostgreSQL the change's own transaction usually sent the NOTIFY already
        (``notified``); on SQLite there is one process and the hub is local. Best
        effort: the change itself is committed, and a caller must not be answered 5xx
        for it (a client would resubmit a task that runs); a page that missed the event
        catches up on its next reload.
        """
        if not self.postgres:
            self.hub.publish(task)
        elif not notified:
            try:
                await self.store.notify(task.id)
            except Exception as exc:
                log.warning("could not announce task %s: %s: %s", task.id, type(exc).__name__, exc)

    async def revoke(self, task_id: str, *, terminate: bool) -> None:
        """Revoke a Celery task (terminating it if it runs); best effort, bounded."""
        try:
            await asyncio.wait_for(
                asyncio.to_thread(
                    self.control.control.revoke, task_id, terminate=terminate, signal="SIGTERM"
                ),
                self.settings.revoke_timeout,
            )
        except Exception as exc:  # the task is CANCELLED in the store either way
            log.warning("could not revoke Celery task %s: %s: %s", task_id, type(exc).__name__, exc)
