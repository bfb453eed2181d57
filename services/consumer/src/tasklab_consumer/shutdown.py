"""Graceful shutdown driven by SIGTERM/SIGINT.

The signal handler only counts signals: it never takes a lock that the interrupted
main thread could be holding. Every thread polls :attr:`Shutdown.requested`; the
waits below are short sleeps in a loop, so they end soon after a signal.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from types import FrameType

log = logging.getLogger("tasklab.consumer")

#: How often a wait checks for a shutdown request, in seconds.
POLL_SECONDS = 0.2


class Shutdown:
    """A shutdown request: the first signal asks to finish; the second exits at once."""

    def __init__(self) -> None:
        self._requests = 0

    @property
    def requested(self) -> bool:
        return self._requests > 0

    def request(self) -> None:
        """Ask for a graceful shutdown (what the first signal does)."""
        self._requests += 1

    def install(self) -> None:
        """Handle SIGTERM and SIGINT; call from the main thread."""
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)

    def wait(self, seconds: float) -> bool:
        """Sleep ``seconds``; return True as soon as a shutdown is requested."""
        deadline = time.monotonic() + seconds
        while not self.requested:
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
