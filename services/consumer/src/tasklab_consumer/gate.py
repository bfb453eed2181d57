"""Who may run at once: tasks share the worker threads, a redelivered one runs alone.

A redelivered message may be the one that killed the previous consumer process (a
poison message): every task running in that process died with it, and each of them
counts one start without an outcome against the api's ``DELIVERY_LIMIT``. Were the
redelivered messages run side by side again, the poison would take its neighbours
down on every delivery, and the api would give up on healthy tasks along with it.
Run alone, a redelivered message can only fail itself: each innocent task is hit once
at most, by the crash that first brought it back.

Isolation is bounded in time (``CONSUMER_ISOLATION_WAIT``): a task that has waited
that long runs beside the others anyway. A long task in the way then costs some
isolation, never an hour of idle threads, and a waiting task, silent meanwhile, is
never taken for a vanished one by the api's housekeeping.

Celery's prefork pool needs none of this: each task runs in its own process there.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from enum import Enum

from tasklab_consumer.shutdown import POLL_SECONDS, Shutdown

log = logging.getLogger("tasklab.consumer")


class Entry(Enum):
    """How a task holds the gate."""

    ALONE = "alone"
    SHARED = "shared"


class RunGate:
    """A shared/exclusive gate: ordinary tasks share it, a redelivered task holds it alone.

    An exclusive waiter goes first: ordinary tasks arriving after it wait for it, so a
    steady stream of new tasks cannot postpone a redelivered one. Every wait is
    bounded by ``max_wait`` seconds, after which the task enters shared; it ends early
    on a shutdown request (the message then goes back to the queue).
    """

    def __init__(self, shutdown: Shutdown, max_wait: float) -> None:
        self._shutdown = shutdown
        self._max_wait = max_wait
        self._cond = threading.Condition()
        self._running = 0
        self._alone_running = False
        self._waiting_alone = 0

    @contextmanager
    def slot(self, *, alone: bool) -> Iterator[Entry | None]:
        """Hold the gate while the block runs. Yields how (alone only if asked for and
        obtained in time), or None (not holding it) when a shutdown is requested before
        the task could start."""
        entry = self._enter(alone and self._max_wait > 0)
        try:
            yield entry
        finally:
            if entry is not None:
                self._leave(entry)

    @property
    def running(self) -> int:
        """Tasks holding the gate now."""
        with self._cond:
            return self._running

    def _enter(self, alone: bool) -> Entry | None:
        deadline = time.monotonic() + self._max_wait
        with self._cond:
            if alone:
                self._waiting_alone += 1
            try:
                entry = self._wait_turn(alone, deadline)
            finally:
                if alone:
                    self._waiting_alone -= 1
                    self._cond.notify_all()  # ordinary tasks may go once it stops waiting
            if entry is None:
                return None
            self._running += 1
            if entry is Entry.ALONE:
                self._alone_running = True
            return entry

    def _wait_turn(self, alone: bool, deadline: float) -> Entry | None:
        """Under the lock: wait until the task may enter, and say how; None on shutdown."""
        told = False
        while not self._shutdown.requested:
            if self._may_enter(alone):
                return Entry.ALONE if alone else Entry.SHARED
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                log.warning(
                    "%s waited %.0f s to run; running it beside %d other task(s)",
                    "a redelivered message" if alone else "a message behind a redelivered one",
                    self._max_wait,
                    self._running,
                )
                return Entry.SHARED
            if alone and not told:
                log.info(
                    "a redelivered message waits for %d running task(s), to run alone "
                    "(it may be the one that stopped a consumer)",
                    self._running,
                )
                told = True
            self._cond.wait(min(remaining, POLL_SECONDS))
        return None

    def _may_enter(self, alone: bool) -> bool:
        if alone:
            return self._running == 0
        return not self._alone_running and self._waiting_alone == 0

    def _leave(self, entry: Entry) -> None:
        with self._cond:
            self._running -= 1
            if entry is Entry.ALONE:
                self._alone_running = False
            self._cond.notify_all()
