"""What every phase of the benchmark shares: sizes, time budget, processes, profiler."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tasklab_devtools.procs import ManagedProcess, wait_http_ok
from tasklab_devtools.rabbitmq import RabbitNode
from tasklab_devtools.stack import venv_command

__all__ = [
    "SUBMIT_BODY",
    "Budget",
    "BudgetExceeded",
    "Context",
    "PhaseTimer",
    "Plan",
    "python_process",
    "say",
    "wait_http",
]

#: The body every submission uses, baselines and system alike: a 0-second task.
SUBMIT_BODY: dict[str, Any] = {"method": "celery", "duration": 0}


def say(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Plan:
    """How much each measurement does (fixed counts; the load is bounded)."""

    concurrency: int = 32
    #: Interleaved rounds of the drain section (the system, each peer, the raw worker,
    #: then again): every figure there is the median of this many runs.
    rounds: int = 3
    #: Interleaved rounds of the cheaper sections (submission rates, latencies).
    fast_rounds: int = 5
    warmup: int = 200
    bare_requests: int = 2000
    publish_requests: int = 1500
    naive_requests: int = 200
    submit_requests: int = 1000
    #: Per round: tasks one at a time (submit → DONE per method, sync, raw Celery).
    latency_samples: int = 20
    #: Per round: tasks that get a signed IN_PROGRESS and DONE report (at rest, under load).
    callback_samples: int = 10
    #: Tasks per drain (the issue's N), and per warm-up drain before the first round.
    drain_tasks: int = 3000
    drain_warmup: int = 200
    #: Tasks of the live load (submitted while the workers run, the stream followed).
    live_tasks: int = 1000
    #: The Celery workers' and the consumer's concurrency (the stack's defaults).
    worker_concurrency: int = 3
    scaling_slots: tuple[int, ...] = (1, 2, 4, 8, 16, 32)
    #: 1-second tasks per worker slot in each scaling run, and runs per slot count.
    scaling_rounds: int = 3
    scaling_repeats: int = 3

    def quick(self) -> Plan:
        """A smaller plan, to try the benchmark out (numbers are less stable)."""
        return replace(
            self,
            rounds=2,
            fast_rounds=2,
            warmup=50,
            bare_requests=500,
            publish_requests=500,
            naive_requests=60,
            submit_requests=300,
            latency_samples=10,
            callback_samples=5,
            drain_tasks=300,
            drain_warmup=50,
            live_tasks=200,
            scaling_slots=(32,),
            scaling_rounds=2,
            scaling_repeats=2,
        )


class BudgetExceeded(RuntimeError):
    """The run's time budget is spent: the remaining measurements are skipped."""


class Budget:
    """The whole run's time limit; waits are cut to what is left of it."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.started = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def remaining(self) -> float:
        return self.seconds - self.elapsed()

    def cap(self, timeout: float) -> float:
        """``timeout``, or less when the budget ends sooner; raises when none is left."""
        left = self.remaining()
        if left <= 0:
            raise BudgetExceeded(f"the time budget of {self.seconds:g} s is spent")
        return min(timeout, left)


@dataclass
class PhaseTimer:
    """Prints and records how long each phase took."""

    phases: dict[str, float] = field(default_factory=dict)

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        say(f"{name} ...")
        began = time.monotonic()
        try:
            yield
        finally:
            took = time.monotonic() - began
            self.phases[name] = round(took, 2)
            say(f"{name}: {took:.1f} s")


@dataclass
class Context:
    """The run: where things go, the broker, the plan and the clock."""

    root: Path
    work: Path
    logs: Path
    node: RabbitNode
    plan: Plan
    budget: Budget
    timer: PhaseTimer
    profile_dir: Path | None = None
    #: Failed phases and runs: ``{"phase": ..., "error": ...}``.
    errors: list[dict[str, str]] = field(default_factory=list)

    def error(self, phase: str, exc: BaseException) -> None:
        """Record a failure (its message cut to a readable length)."""
        text = f"{type(exc).__name__}: {exc}"
        self.errors.append(
            {"phase": phase, "error": text if len(text) <= 300 else text[:300] + " ..."}
        )

    def env(self, **extra: str) -> dict[str, str]:
        """Environment of a helper process: ours, the broker, the repository on the path."""
        path = os.pathsep.join(p for p in (str(self.root), os.environ.get("PYTHONPATH")) if p)
        return {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": path,
            "RMQ_URL": self.node.amqp_url,
            **extra,
        }


def python_process(ctx: Context, name: str, argv: list[str], **env: str) -> ManagedProcess:
    """A helper process (``python ...`` or a console script of the venv), logging to a file."""
    command = [sys.executable, *argv] if argv[0] == "-m" else [venv_command(argv[0]), *argv[1:]]
    return ManagedProcess(
        name, command, ctx.env(**env), cwd=ctx.work, log_path=ctx.logs / f"{name}.log"
    )


def wait_http(url: str, proc: ManagedProcess, timeout: float = 60) -> None:
    """Wait until ``url`` answers 200 (RuntimeError with the log if ``proc`` died)."""
    try:
        wait_http_ok(url, timeout, process=proc)
    except (OSError, RuntimeError) as exc:
        tail = proc.log_tail() if proc.log_path is not None else ""
        raise RuntimeError(f"{proc.name} did not start: {exc}\n{tail}") from exc
