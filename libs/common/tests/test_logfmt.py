from __future__ import annotations

import logging
import sys

from tasklab_common.logfmt import TextFormatter


def _record(msg: str, *args: object, exc: bool = False) -> logging.LogRecord:
    info = None
    if exc:
        try:
            raise ValueError("boom")
        except ValueError:
            info = sys.exc_info()
    return logging.LogRecord("tasklab.api", logging.INFO, __file__, 1, msg, args, info)


def test_text_lines_cannot_be_forged() -> None:
    fmt = TextFormatter("%(name)s: %(message)s")
    line = fmt.format(_record("housekeeping by %s", "w1\n[2026-12-03] tasklab.api: forged\x1b[2J"))
    assert "\n" not in line and "\x1b" not in line
    assert line == "tasklab.api: housekeeping by w1\\n[2026-12-03] tasklab.api: forged\\x1b[2J"
    assert fmt.format(_record("tab\tkept, é kept")) == "tasklab.api: tab\tkept, é kept"


def test_a_traceback_keeps_its_lines() -> None:
    text = TextFormatter("%(message)s").format(_record("failed", exc=True))
    assert text.startswith("failed\nTraceback") and "ValueError: boom" in text
