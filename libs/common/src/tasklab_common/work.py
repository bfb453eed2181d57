"""The simulated work, as plain functions shared by the Celery worker and the consumer.

``process_task`` sleeps; ``process_data`` computes statistics over numbers. Both
fail on purpose while ``attempt <= fail_times``, so retries can be seen.

The work is interruptible: it sleeps through the ``sleep`` it is given, and a worker
that must stop it (a hand-back, a cancel) gives :func:`interruptible_sleep`, which
raises out of the work within :data:`POLL_SECONDS`.
"""

from __future__ import annotations

import math
import os
import signal
import statistics
import time
from collections.abc import Callable
from typing import Any, Final

from tasklab_common.messages import TaskMessage
from tasklab_common.models import TaskKind

#: Fault injection, for the fault suite only: a task whose ``duration`` equals this
#: variable's value kills the process that runs it (SIGKILL) on every delivery, like
#: a poison message. Unset (the default) in every deployment.
CRASH_ON_DURATION_ENV: Final = "TASKLAB_FAULT_CRASH_ON_DURATION"


#: How often an interruptible sleep checks whether it must stop, in seconds.
POLL_SECONDS: Final = 0.2


def interruptible_sleep(seconds: float, check: Callable[[], None]) -> None:
    """Sleep ``seconds``, calling ``check()`` (which raises to interrupt the work) before
    every slice of at most :data:`POLL_SECONDS`."""
    deadline = time.monotonic() + seconds
    while (remaining := deadline - time.monotonic()) > 0:
        check()
        time.sleep(min(remaining, POLL_SECONDS))


def _maybe_crash(duration: float) -> None:
    value = os.environ.get(CRASH_ON_DURATION_ENV)
    if not value:
        return
    try:
        poison = float(value)
    except ValueError:
        return
    if duration == poison:
        os.kill(os.getpid(), signal.SIGKILL)


class SimulatedFailure(RuntimeError):
    """Raised on purpose by an attempt that ``fail_times`` says must fail."""


def _maybe_fail(num: int, attempt: int, fail_times: int) -> None:
    if attempt <= fail_times:
        raise SimulatedFailure(
            f"simulated failure of task {num}, attempt {attempt} of {fail_times} set to fail"
        )


def process_task(
    num: int,
    timeout: float,
    *,
    attempt: int = 1,
    fail_times: int = 0,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Sleep ``timeout`` seconds; the guide's result shape."""
    _maybe_fail(num, attempt, fail_times)
    started = time.monotonic()
    if timeout > 0:
        sleep(timeout)
    return {
        "status": "success",
        "task_num": num,
        "timeout": timeout,
        "slept": round(time.monotonic() - started, 3),
    }


def process_data(
    num: int,
    numbers: list[float],
    *,
    attempt: int = 1,
    fail_times: int = 0,
    duration: float = 0.0,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Statistics over ``numbers`` (after ``duration`` seconds of simulated work)."""
    _maybe_fail(num, attempt, fail_times)
    if not numbers:
        raise ValueError("process_data needs at least one number")
    if duration > 0:
        sleep(duration)
    total = math.fsum(numbers)
    return {
        "status": "success",
        "task_num": num,
        "count": len(numbers),
        "sum": total,
        "mean": total / len(numbers),
        "median": statistics.median(numbers),
        "min": min(numbers),
        "max": max(numbers),
        "stdev": statistics.pstdev(numbers),
    }


def execute(
    msg: TaskMessage, attempt: int, *, sleep: Callable[[float], None] = time.sleep
) -> dict[str, Any]:
    """Run the work a task message asks for."""
    p = msg.params
    _maybe_crash(p.duration)
    if msg.kind is TaskKind.PROCESS_TASK:
        return process_task(
            msg.num, p.duration, attempt=attempt, fail_times=p.fail_times, sleep=sleep
        )
    return process_data(
        msg.num,
        list(p.numbers or []),
        attempt=attempt,
        fail_times=p.fail_times,
        duration=p.duration,
        sleep=sleep,
    )


def retry_delay(retries_done: int, base: float, cap: float) -> float:
    """Exponential backoff: ``base``, ``2*base``, ``4*base``... capped at ``cap``."""
    return float(min(cap, base * (2 ** max(0, retries_done))))
