"""The api's live stream (``GET /api/events``, server-sent events) as test tooling reads it."""

from __future__ import annotations

import json
import threading
from typing import Any


class TaskEventLog:
    """The ``task`` events of the live stream, fed one line at a time.

    A reader thread calls :meth:`feed`; tests read :attr:`events` (a copy, under the
    lock) and wait on :attr:`hello`, set by the api's first event on a connection.
    """

    def __init__(self) -> None:
        self.hello = threading.Event()
        self._events: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._event = ""
        self._partial = b""

    def feed_bytes(self, chunk: bytes) -> None:
        """Bytes of the stream as they arrive. Lines end at ``\n`` only (a task's JSON
        may hold U+2028 and the like unescaped); a line cut between reads waits for
        its end."""
        *lines, self._partial = (self._partial + chunk).split(b"\n")
        for line in lines:
            self.feed(line.decode().rstrip("\r"))

    def feed(self, line: str) -> None:
        """One line of the stream, without its line ending."""
        if not line:
            self._event = ""  # a blank line ends an event (and its type)
        elif line.startswith("event:"):
            self._event = line.split(":", 1)[1].strip()
        elif line.startswith("data:") and self._event == "hello":
            self.hello.set()
        elif line.startswith("data:") and self._event == "task":
            with self._lock:
                self._events.append(json.loads(line.split(":", 1)[1]))

    def new_connection(self) -> None:
        """A reconnection: whatever the last connection was in the middle of is gone."""
        self._event = ""
        self._partial = b""

    @property
    def events(self) -> list[dict[str, Any]]:
        """Every task event so far, in order."""
        with self._lock:
            return list(self._events)
