"""Debian's Chromium for the browser tests, launched the way this machine allows."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from playwright.sync_api import Browser, Playwright, sync_playwright

CHROMIUM = os.environ.get("TASKLAB_CHROMIUM", "/usr/bin/chromium")
#: No sandbox (root), no GPU, and nothing that reaches out to the network by itself.
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--disable-dev-shm-usage",
)


def launch_chromium(pw: Playwright) -> Browser:
    """Headless Chromium; RuntimeError with the fix when it is not installed."""
    if not Path(CHROMIUM).exists():
        raise RuntimeError(f"no Chromium at {CHROMIUM}: run scripts/bootstrap.sh --test")
    return pw.chromium.launch(executable_path=CHROMIUM, args=list(CHROMIUM_ARGS), headless=True)


@contextlib.contextmanager
def chromium() -> Iterator[Browser]:
    """A launched Chromium (see :func:`launch_chromium`), closed at exit."""
    with sync_playwright() as pw:
        browser = launch_chromium(pw)
        try:
            yield browser
        finally:
            browser.close()
