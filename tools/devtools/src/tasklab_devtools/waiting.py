"""Polling for a condition in tests: the one helper the test suites share."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_until(
    check: Callable[[], bool], what: str, timeout: float = 10.0, *, interval: float = 0.05
) -> None:
    """Poll ``check`` until it is true; ``AssertionError`` naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)
