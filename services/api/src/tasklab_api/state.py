"""The api process's long-lived objects."""

from __future__ import annotations

from dataclasses import dataclass, field

from tasklab_api.brokerstats import BrokerStats, EmptyQueues
from tasklab_api.cancelling import Canceller
from tasklab_api.config import Settings
from tasklab_api.events import EventHub
from tasklab_api.limits import RateLimiter
from tasklab_api.publisher import Publisher
from tasklab_api.store import TaskStore
from tasklab_api.workloads import ClusterView


@dataclass
class AppState:
    settings: Settings
    store: TaskStore
    publisher: Publisher
    hub: EventHub
    limiter: RateLimiter
    canceller: Canceller
    broker_stats: BrokerStats
    cluster: ClusterView
    #: What housekeeping saw of the queues (see routers.maintenance).
    empty_queues: EmptyQueues = field(default_factory=EmptyQueues)
