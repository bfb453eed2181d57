"""A liveness heartbeat file for processes that serve no HTTP port.

A worker's main loop calls :meth:`Heartbeat.beat` often; it touches the file at
most every ``interval`` seconds. A probe (e.g. Kubernetes ``exec``) checks that the
file is younger than a minute: a main loop that hangs stops touching it.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from pathlib import Path

DEFAULT_INTERVAL = 10.0


class Heartbeat:
    def __init__(self, path: Path | None, interval: float = DEFAULT_INTERVAL) -> None:
        self.path = path
        self.interval = interval
        self._last = float("-inf")

    def beat(self, *, force: bool = False) -> None:
        """Touch the file if ``interval`` seconds passed since the last touch."""
        if self.path is None:
            return
        now = time.monotonic()
        if not force and now - self._last < self.interval:
            return
        self.path.touch()
        os.utime(self.path)
        self._last = now

    def keep_alive(self, tick: float = 2.0) -> threading.Thread | None:
        """Go on beating from a daemon thread until the process exits.

        For a shutdown that still runs work (a Celery warm shutdown finishing its
        tasks): the main loop no longer beats, but the process is alive and must not be
        restarted by a liveness probe before its grace period ends.
        """
        if self.path is None:
            return None

        def run() -> None:
            while True:
                with contextlib.suppress(OSError):
                    self.beat()
                time.sleep(tick)

        thread = threading.Thread(target=run, name="heartbeat", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        """Remove the file: the process is going away."""
        if self.path is not None:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()


def age(path: Path) -> float:
    """Seconds since the file was last touched."""
    return time.time() - path.stat().st_mtime
