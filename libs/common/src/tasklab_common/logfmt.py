"""A small JSON log formatter (one object a line) carrying task fields when given."""

from __future__ import annotations

import json
import logging
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
