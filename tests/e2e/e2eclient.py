"""What the e2e tests use to drive a target: HTTP helpers and a live-stream recorder."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from tasklab_common.models import FINAL_STATUSES
from tasklab_devtools.livestream import TaskEventLog
from tasklab_devtools.rabbitmq import RabbitNode
from tasklab_devtools.stack import LocalStack

FINAL = {s.value for s in FINAL_STATUSES}


@dataclass
class Target:
    """The system under test, wherever it runs."""

    base_url: str
    secret: str
    broker: RabbitNode | None = None  # set when the test may stop and kill it
    stack: LocalStack | None = None  # set when processes run locally
    #: Where the workers' signed routes are served, when not at base_url (the chart's
    #: api serves them on its internal port only).
    callback_url: str | None = None
    _http: httpx.Client | None = field(default=None, repr=False)

    @property
    def http(self) -> httpx.Client:
        if self._http is None:
            self._http = httpx.Client(base_url=self.base_url, timeout=60)
        return self._http

    def reconnect(self) -> None:
        """Drop the kept-alive connections (they may lead to an api pod that is gone)."""
        if self._http is not None:
            self._http.close()
            self._http = None

    def post_signed_route(self, path: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
        """POST to a workers' route (the status callback, housekeeping), as a worker does."""
        return self.http.post(
            f"{self.callback_url or self.base_url}{path}",
            content=body,
            headers={"Content-Type": "application/json", **headers},
        )

    def submit(self, **body: Any) -> httpx.Response:
        return self.http.post("/api/tasks", json=body)

    def submit_ok(self, **body: Any) -> dict[str, Any]:
        resp = self.submit(**body)
        assert resp.status_code in (200, 202), resp.text
        task: dict[str, Any] = resp.json()
        return task

    def task(self, task_id: str) -> dict[str, Any]:
        resp = self.http.get(f"/api/tasks/{task_id}")
        resp.raise_for_status()
        out: dict[str, Any] = resp.json()
        return out

    def total(self) -> int:
        return int(self.http.get("/api/tasks", params={"limit": 1}).json()["total"])

    def wait_status(
        self, task_id: str, statuses: set[str] | None = None, timeout: float = 30
    ) -> dict[str, Any]:
        """Poll until the task has one of ``statuses`` (default: any final one)."""
        want = statuses or FINAL
        deadline = time.monotonic() + timeout
        while True:
            task = self.task(task_id)
            if task["status"] in want:
                return task
            if time.monotonic() > deadline:
                raise AssertionError(f"task {task_id} still {task['status']} after {timeout}s")
            time.sleep(0.05)


class EventRecorder(TaskEventLog):
    """Reads the live stream (``/api/events``) in a thread and keeps every task event."""

    def __init__(self, base_url: str) -> None:
        super().__init__()
        self.base_url = base_url
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> EventRecorder:
        self._thread.start()
        assert self.hello.wait(10), "no hello on the live stream"
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()

    def _run(self) -> None:
        with (
            httpx.Client(base_url=self.base_url, timeout=httpx.Timeout(5, read=None)) as c,
            c.stream("GET", "/api/events") as resp,
        ):
            for chunk in resp.iter_bytes():
                if self._stop.is_set():
                    return
                self.feed_bytes(chunk)

    def statuses(self, task_id: str) -> list[str]:
        return [e["status"] for e in self.events if e["id"] == task_id]

    def wait_for(self, task_id: str, status: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while status not in self.statuses(task_id):
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"live stream never showed {status} for {task_id}: {self.statuses(task_id)}"
                )
            time.sleep(0.02)
