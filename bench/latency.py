"""The system's latencies, one request at a time.

- submit → DONE: from sending ``POST /api/tasks`` to the store's ``finished_at`` (and
  to the DONE event on the live stream);
- sync: ``POST /api/tasks`` with method ``sync`` until its 200;
- callback → live stream: a signed status report sent the way a worker sends it,
  until its event arrives on ``GET /api/events``. The reports go to reserved tasks
  (created while the Celery worker was paused, their messages purged), so no worker
  ever runs them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from typing import Any

import httpx

from bench.events import EventStream
from bench.loadgen import JSON_HEADERS
from bench.stack import SystemStack, epoch
from bench.stats import summarize
from tasklab_common.messages import StatusUpdate
from tasklab_common.models import TaskStatus
from tasklab_common.signing import sign_headers

__all__ = [
    "PROBE_SECRET_ENV",
    "TASK_TIMEOUT",
    "CallbackProbe",
    "callback_latency",
    "submit_to_done",
    "sync_latency",
]

#: How long one task may take to reach DONE in a latency measurement.
TASK_TIMEOUT = 15.0
#: Requests before the measured ones (connections, caches).
WARMUP = 5
#: The environment variable that hands the callback secret to the probe's process.
PROBE_SECRET_ENV = "BENCH_CALLBACK_SECRET"  # noqa: S105 (a variable's name)


async def submit_to_done(
    system: SystemStack, stream: EventStream, method: str, samples: int
) -> dict[str, Any]:
    """One task at a time: send → DONE (the store's finished_at) and → seen on the stream."""
    done: list[float] = []
    visible: list[float] = []
    body = {"method": method, "duration": 0}
    async with httpx.AsyncClient(trust_env=False, timeout=TASK_TIMEOUT) as client:
        for index in range(WARMUP + samples):
            sent = time.time()
            response = await client.post(system.submit_url, json=body)
            if response.status_code != 202:
                raise RuntimeError(f"submit answered {response.status_code}")
            task_id = str(response.json()["id"])
            seen = await stream.wait(task_id, "DONE", TASK_TIMEOUT)
            if index >= WARMUP:
                done.append(epoch(seen.task["finished_at"]) - sent)
                visible.append(seen.arrived - sent)
    return {"done": summarize(done).as_dict(), "visible": summarize(visible).as_dict()}


async def sync_latency(system: SystemStack, samples: int) -> dict[str, Any]:
    """``sync`` submissions one at a time, until each one's 200."""
    latencies: list[float] = []
    body = {"method": "sync", "duration": 0}
    async with httpx.AsyncClient(trust_env=False, timeout=TASK_TIMEOUT + 30) as client:
        for index in range(WARMUP + samples):
            began = time.perf_counter()
            response = await client.post(system.submit_url, json=body)
            elapsed = time.perf_counter() - began
            if response.status_code != 200 or response.json().get("status") != "DONE":
                raise RuntimeError(f"sync answered {response.status_code}: {response.text}")
            if index >= WARMUP:
                latencies.append(elapsed)
    return summarize(latencies).as_dict()


async def callback_latency(
    callback_url: str, secret: str, stream: EventStream, task_ids: list[str], gap: float
) -> tuple[list[float], int]:
    """Signed IN_PROGRESS then DONE reports for each task, as a worker sends them;
    seconds from sending each report to its event on the live stream, and how many
    events never came."""
    latencies: list[float] = []
    timeouts = 0
    async with httpx.AsyncClient(trust_env=False, timeout=10) as client:
        for task_id in task_ids:
            for status, result in (
                (TaskStatus.IN_PROGRESS, None),
                (TaskStatus.DONE, {"status": "success"}),
            ):
                update = StatusUpdate(
                    task_id=task_id,
                    status=status,
                    attempt=1,
                    worker="bench-callback",
                    result=result,
                )
                body = update.model_dump_json().encode()
                headers = {**JSON_HEADERS, **sign_headers(secret, body)}
                sent = time.time()
                response = await client.post(callback_url, content=body, headers=headers)
                if response.status_code != 200:
                    raise RuntimeError(
                        f"callback answered {response.status_code}: {response.text[:200]}"
                    )
                try:
                    seen = await stream.wait(task_id, status.value, TASK_TIMEOUT)
                except TimeoutError:
                    timeouts += 1
                    continue
                latencies.append(seen.arrived - sent)
            await asyncio.sleep(gap)
    return latencies, timeouts


class CallbackProbe:
    """:func:`callback_latency` in a process of its own (``bench.probe``), following
    the live stream itself, as a UI does from its own machine. Under load the
    benchmark's process runs the load generator's clients: reports sent from it, and
    events read by it, waited behind them, and the latency measured that wait too."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self._process = process

    @classmethod
    async def start(cls, system: SystemStack, task_ids: list[str], gap: float) -> CallbackProbe:
        """The probe, once it follows the stream (it sends its first report then)."""
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.probe",
            system.cfg.api_base_url,
            system.cfg.api_callback_url,
            str(gap),
            *task_ids,
            env={**os.environ, PROBE_SECRET_ENV: system.cfg.callback_secret},
            stdout=asyncio.subprocess.PIPE,
        )
        assert process.stdout is not None
        try:
            line = await asyncio.wait_for(process.stdout.readline(), 30)
        except TimeoutError:
            line = b""
        if line.strip() != b"ready":
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
            raise RuntimeError(f"the callback probe did not start (exit {process.returncode})")
        return cls(process)

    async def result(self) -> tuple[list[float], int]:
        """Its latencies and timeouts, once it is done."""
        out, _ = await self._process.communicate()
        if self._process.returncode != 0:
            raise RuntimeError(f"the callback probe failed (exit {self._process.returncode})")
        found = json.loads(out)
        return [float(x) for x in found["latencies"]], int(found["timeouts"])
