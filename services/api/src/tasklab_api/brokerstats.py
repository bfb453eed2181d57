"""Queue depth and consumers, read from RabbitMQ's management API.

Counts come from the management plugin (``RMQ_MANAGEMENT_URL``; credentials and
vhost from ``RMQ_URL``): per queue the ready and unacknowledged messages and the
consumers, each consumer named by its connection (the Celery worker and the consumer
name their connections after themselves, e.g. ``celery@<pod>``). Reads are cached
for a second, so any number of pages and scrapes cost one request a second.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import httpx

from tasklab_common.queues import CELERY_QUEUE, DIRECT_QUEUE

log = logging.getLogger("tasklab.brokerstats")

WATCHED_QUEUES = (CELERY_QUEUE, DIRECT_QUEUE)


@dataclass(frozen=True)
class QueueStats:
    name: str
    ready: int
    unacked: int
    consumers: int
    consumer_names: tuple[str, ...] = ()
    #: The broker gave the queue's message counts. False for a queue not found (not
    #: declared yet, or not recovered yet after a restart), not running, or whose
    #: figures are not collected yet (the first seconds after a restart): its zeros
    #: are placeholders, and must not be taken for an empty queue.
    counted: bool = True

    @property
    def seen_empty(self) -> bool:
        return self.counted and self.ready == 0 and self.unacked == 0


@dataclass(frozen=True)
class BrokerSnapshot:
    ok: bool
    queues: tuple[QueueStats, ...] = ()
    error: str | None = None
    taken_at: float = field(default_factory=time.monotonic)


def consumer_connections(queue: dict[str, Any]) -> set[str]:
    """The broker's names of the connections that consume from ``queue`` (the management
    API's queue object). A consumer whose channel is closing has ``channel_details`` as an
    empty list rather than an object (seen while a worker stopped): it is left out."""
    names = set()
    for consumer in queue.get("consumer_details") or []:
        details = consumer.get("channel_details") if isinstance(consumer, dict) else None
        if isinstance(details, dict) and (conn := details.get("connection_name")):
            names.add(str(conn))
    return names


class BrokerStats:
    def __init__(self, management_url: str | None, amqp_url: str, *, ttl: float = 1.0) -> None:
        parts = urlsplit(amqp_url)
        self._vhost = unquote(parts.path[1:]) if len(parts.path) > 1 else "/"
        self._auth = (unquote(parts.username or "guest"), unquote(parts.password or "guest"))
        self._base = management_url.rstrip("/") + "/" if management_url else None
        self._ttl = ttl
        self._cached: BrokerSnapshot | None = None
        self._lock = asyncio.Lock()
        self._client: httpx.AsyncClient | None = None

    @property
    def configured(self) -> bool:
        return self._base is not None

    async def snapshot(self, *, max_age: float | None = None) -> BrokerSnapshot:
        """The figures, at most ``max_age`` seconds old (default: the cache's ttl; 0: read
        now, for decisions rather than display)."""
        if self._base is None:
            return BrokerSnapshot(ok=False, error="RMQ_MANAGEMENT_URL is not set")
        limit = self._ttl if max_age is None else max_age
        async with self._lock:
            cached = self._cached
            if cached is not None and time.monotonic() - cached.taken_at < limit:
                return cached
            self._cached = await self._read(self._base)
            return self._cached

    async def _read(self, base: str) -> BrokerSnapshot:
        if self._client is None:
            self._client = httpx.AsyncClient(auth=self._auth, timeout=3.0)
        vhost = quote(self._vhost, safe="")
        queues = []
        try:
            # Consumers name their connections (e.g. celery@<pod>); the queue lists
            # the broker's own connection names, so map one to the other.
            conns = await self._client.get(
                f"{base}api/vhosts/{vhost}/connections",
                params={"columns": "name,user_provided_name"},
            )
            conns.raise_for_status()
            named = {
                str(c["name"]): str(c.get("user_provided_name") or c["name"]) for c in conns.json()
            }
            for name in WATCHED_QUEUES:
                resp = await self._client.get(f"{base}api/queues/{vhost}/{quote(name, safe='')}")
                if resp.status_code == 404:  # not declared yet
                    queues.append(QueueStats(name, 0, 0, 0, counted=False))
                    continue
                resp.raise_for_status()
                q = resp.json()
                names = tuple(sorted({named.get(c, c) for c in consumer_connections(q)}))
                queues.append(
                    QueueStats(
                        name=name,
                        ready=int(q.get("messages_ready", 0)),
                        unacked=int(q.get("messages_unacknowledged", 0)),
                        consumers=int(q.get("consumers", 0)),
                        consumer_names=names,
                        counted=q.get("state", "running") == "running"
                        and "messages_ready" in q
                        and "messages_unacknowledged" in q,
                    )
                )
        except (httpx.HTTPError, ValueError) as exc:
            log.debug("management API unavailable: %s", exc)
            return BrokerSnapshot(
                ok=False, error=f"management API unavailable ({type(exc).__name__})"
            )
        except (KeyError, TypeError, AttributeError) as exc:
            # An answer of another shape than this reads: no figures, never a 500.
            log.warning("management API answer not understood: %r", exc)
            return BrokerSnapshot(ok=False, error="management API answer not understood")
        return BrokerSnapshot(ok=True, queues=tuple(queues))

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()


class EmptyQueues:
    """Since when each queue has been seen empty (no ready, no unacknowledged message,
    figures counted) by every observation in an unbroken row; any other sight of it
    (messages, no figures, the management API not answering) starts over."""

    def __init__(self) -> None:
        self._since: dict[str, datetime] = {}

    def observe(self, snapshot: BrokerSnapshot, now: datetime) -> None:
        seen = {q.name for q in snapshot.queues if q.seen_empty} if snapshot.ok else set()
        self._since = {name: self._since.get(name, now) for name in seen}

    def empty_since(self, at_least: timedelta, now: datetime) -> dict[str, datetime]:
        """The queues seen empty for ``at_least`` up to ``now``, and since when."""
        return {name: t for name, t in self._since.items() if now - t >= at_least}
