"""Polling for a condition in tests: the one helper the test suites share."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_until(
    check: Callable[[], bool],
    what: str,
    timeout: float = 10.0,
    *,
    interval: float = 0.05,
    detail: Callable[[], object] | None = None,
) -> None:
    """Poll ``check`` until it is true; ``AssertionError`` naming ``what`` (and what
    ``detail`` says last) after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            more = f" (last: {detail()})" if detail is not None else ""
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}{more}")
        time.sleep(interval)
