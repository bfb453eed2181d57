"""Graceful shutdown driven by SIGTERM/SIGINT.

The signal handler only counts signals (and notes when the first came): it never takes
a lock that the interrupted main thread could be holding. Every thread polls
:attr:`Shutdown.requested`; the waits below are short sleeps in a loop, so they end
soon after a signal. The work of a task checks :meth:`Shutdown.check_hand_back` where
it sleeps, which hands the task back (raises :class:`~tasklab_common.handback.HandedBack`) once the
shutdown is ``hand_back_after`` seconds old. Every wait checks every
:data:`~tasklab_common.work.POLL_SECONDS`.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from types import FrameType

from tasklab_common.handback import HandedBack
from tasklab_common.work import POLL_SECONDS

log = logging.getLogger("tasklab.consumer")

__all__ = ["POLL_SECONDS", "Shutdown"]


class Shutdown:
    """A shutdown request: the first signal asks to finish; the second exits at once."""

    def __init__(self, hand_back_after: float = 0.0) -> None:
        self._requests = 0
        self._requested_at = 0.0
        #: Seconds after the first signal at which running work is handed back (0: never).
        self.hand_back_after = hand_back_after

    @property
    def requested(self) -> bool:
        return self._requests > 0

    def request(self) -> None:
        """Ask for a graceful shutdown (what the first signal does)."""
        if self._requests == 0:
            self._requested_at = time.monotonic()
        self._requests += 1

    @property
    def hand_back_due(self) -> bool:
        """Whether running work must be handed back now."""
        return (
            self.requested
            and self.hand_back_after > 0
            and time.monotonic() - self._requested_at >= self.hand_back_after
        )

    def check_hand_back(self) -> None:
        """Where the work sleeps: raise HandedBack once the hand-back time has come."""
        if self.hand_back_due:
            raise HandedBack

    def install(self) -> None:
        """Handle SIGTERM and SIGINT; call from the main thread."""
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)

    def wait(self, seconds: float, until: threading.Event | None = None) -> bool:
        """Sleep ``seconds``; return True as soon as a shutdown is requested (or
        ``until`` is set), False when the time is up."""
        deadline = time.monotonic() + seconds
        while not self.requested and not (until is not None and until.is_set()):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            time.sleep(min(remaining, POLL_SECONDS))
        return True

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        self.request()
        if self._requests > 1:
            # Unacked messages are redelivered by the broker: nothing is lost.
            log.warning("%s again: exiting now, unfinished tasks will be redelivered", name)
            os._exit(128 + signum)
        log.info("%s received: finishing running tasks, then exiting", name)
