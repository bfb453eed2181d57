"""A reader of the api's live stream (``GET /api/events``, server-sent events).

It records, for every task and status, the wall-clock time (``time.time()``) at
which the first ``task`` event with that status arrived, and lets callers wait for
one. The stream is read by a background task on the caller's event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass
from typing import Any

import httpx

__all__ = ["EventStream", "Seen"]


@dataclass(frozen=True)
class Seen:
    """One status of one task as it first appeared on the stream."""

    arrived: float
    task: dict[str, Any]


class EventStream:
    """Follows ``/api/events`` of an api; reconnects if the stream ends."""

    def __init__(self, base_url: str) -> None:
        self.url = f"{base_url}/api/events"
        self.seen: dict[tuple[str, str], Seen] = {}
        self.events = 0
        self.reconnects = 0
        self._client = httpx.AsyncClient(timeout=httpx.Timeout(10.0, read=None))
        self._runner: asyncio.Task[None] | None = None
        self._changed = asyncio.Condition()
        self._connected = asyncio.Event()

    async def start(self, timeout: float = 10.0) -> None:
        """Start reading; returns once the stream's ``hello`` event arrived."""
        self._runner = asyncio.create_task(self._run(), name="event-stream")
        await asyncio.wait_for(self._connected.wait(), timeout)

    async def close(self) -> None:
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
        await self._client.aclose()

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(httpx.HTTPError):
                await self._follow()
            self._connected.clear()
            self.reconnects += 1
            await asyncio.sleep(0.2)

    async def _follow(self) -> None:
        async with self._client.stream("GET", self.url) as response:
            response.raise_for_status()
            event, data = "", ""
            async for line in response.aiter_lines():
                if line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:"):
                    data += line[5:].strip()
                elif not line:
                    if event == "hello":
                        self._connected.set()
                    elif event == "task" and data:
                        await self._record(json.loads(data))
                    event, data = "", ""

    async def _record(self, task: dict[str, Any]) -> None:
        arrived = time.time()
        self.events += 1
        key = (str(task["id"]), str(task["status"]))
        if key not in self.seen:
            self.seen[key] = Seen(arrived, task)
            async with self._changed:
                self._changed.notify_all()

    async def wait(self, task_id: str, status: str, timeout: float) -> Seen:
        """The first event of ``task_id`` with ``status``; TimeoutError after ``timeout``."""
        key = (task_id, status)
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: key in self.seen)
        return self.seen[key]
