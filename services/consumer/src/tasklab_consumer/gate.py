"""Who may run at once: tasks share the worker threads, a redelivered one runs alone.

A redelivered message may be the one that killed the previous consumer process (a
poison message): every task running in that process died with it, and each of them
counts one start without an outcome against the api's ``DELIVERY_LIMIT``. Were the
redelivered messages run side by side again, the poison would take its neighbours
down on every delivery, and the api would give up on healthy tasks along with it.
Run alone, a redelivered message can only fail itself: each innocent task is hit once
at most, by the crash that first brought it back.

Celery's prefork pool needs none of this: each task runs in its own process there.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from tasklab_consumer.shutdown import POLL_SECONDS, Shutdown


class RunGate:
    """A shared/exclusive gate: ordinary tasks share it, a redelivered task holds it alone.

    An exclusive waiter goes first: ordinary tasks arriving after it wait for it, so a
    steady stream of new tasks cannot postpone a redelivered one forever. Waits end
    early on a shutdown request (the message then goes back to the queue).
    """

    def __init__(self, shutdown: Shutdown) -> None:
        self._shutdown = shutdown
        self._cond = threading.Condition()
        self._running = 0
        self._alone = False
        self._waiting_alone = 0

    @contextmanager
    def slot(self, *, alone: bool) -> Iterator[bool]:
        """Hold the gate while the block runs; yields False (not holding it) when a
        shutdown is requested before the task could start."""
        entered = self._enter(alone)
        try:
            yield entered
        finally:
            if entered:
                self._leave()

    @property
    def running(self) -> int:
        """Tasks holding the gate now."""
        with self._cond:
            return self._running

    def _enter(self, alone: bool) -> bool:
        with self._cond:
            if alone:
                self._waiting_alone += 1
            try:
                while not self._shutdown.requested:
                    if self._may_enter(alone):
                        break
                    self._cond.wait(POLL_SECONDS)
                else:
                    return False
            finally:
                if alone:
                    self._waiting_alone -= 1
                    self._cond.notify_all()  # ordinary tasks may go if it gave up
            self._running += 1
            self._alone = alone
            return True

    def _may_enter(self, alone: bool) -> bool:
        if alone:
            return self._running == 0
        return not self._alone and self._waiting_alone == 0

    def _leave(self) -> None:
        with self._cond:
            self._running -= 1
            if self._running == 0:
                self._alone = False
            self._cond.notify_all()
