"""Log formatters: JSON (one object a line, with task fields when given) and text."""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime

#: ``extra=`` keys copied into the JSON object when a log call passes them.
TASK_FIELDS = ("task_id", "task_num", "method", "worker", "status", "attempt")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        obj: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key in TASK_FIELDS:
            if hasattr(record, key):
                obj[key] = getattr(record, key)
        if record.exc_info:
            obj["exc"] = self.formatException(record.exc_info)
        return json.dumps(obj, default=str)


#: C0 controls and DEL but tab: what could start a forged line or move the cursor.
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def _escape(match: re.Match[str]) -> str:
    return match.group().encode("unicode_escape").decode()


class TextFormatter(logging.Formatter):
    """The readable one-line format, with control characters in the message escaped
    (``\\n`` becomes the two characters ``\\`` ``n``): text from a request or a report
    (a worker name, a requester) cannot forge a log line. A traceback keeps its lines."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return _CONTROL.sub(_escape, super().formatMessage(record))
