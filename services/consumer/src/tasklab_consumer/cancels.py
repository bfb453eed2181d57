"""Cancel notices: which running task a user cancelled.

The api publishes a :class:`~tasklab_common.messages.CancelNotice` to the fanout
exchange :data:`~tasklab_common.queues.CANCEL_EXCHANGE` once it has marked a
direct-queue task ``CANCELLED``. Every consumer binds a queue of its own to it
(exclusive, auto-delete, named by the broker: it lives as long as the consumer's
connection) and reads it without acknowledgements on its I/O thread, which calls
:meth:`CancelBoard.cancel`. The worker thread running that task finds its flag set
where its work sleeps (:meth:`CancelBoard.check`) and stops it
(:class:`~tasklab_common.protocol.Cancelled`): see :mod:`tasklab_common.protocol`.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator

from pydantic import ValidationError

from tasklab_common.messages import CancelNotice
from tasklab_common.protocol import Cancelled

log = logging.getLogger("tasklab.consumer")


class CancelBoard:
    """The tasks this consumer runs, each with a flag its cancel notice sets."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._flags: dict[str, threading.Event] = {}
        self._watchers: dict[str, int] = {}

    @contextlib.contextmanager
    def watch(self, task_id: str) -> Iterator[threading.Event]:
        """Watch for the task's cancel notice while the block runs (from before its
        ``IN_PROGRESS`` report to its last report); yields its flag."""
        with self._lock:
            flag = self._flags.setdefault(task_id, threading.Event())
            self._watchers[task_id] = self._watchers.get(task_id, 0) + 1
        try:
            yield flag
        finally:
            with self._lock:
                self._watchers[task_id] -= 1
                if not self._watchers[task_id]:
                    del self._watchers[task_id], self._flags[task_id]

    def cancel(self, task_id: str) -> bool:
        """Flag a cancelled task; whether it runs here."""
        with self._lock:
            flag = self._flags.get(task_id)
        if flag is None:
            return False
        flag.set()
        return True

    def on_notice(self, body: bytes) -> None:
        """A cancel notice's body, on the I/O thread."""
        try:
            notice = CancelNotice.model_validate_json(body)
        except ValidationError:
            log.warning("ignoring a malformed cancel notice (%d bytes)", len(body))
            return
        if self.cancel(notice.task_id):
            log.info("task %s was cancelled: stopping it", notice.task_id)

    @staticmethod
    def check(flag: threading.Event) -> None:
        """Where the work sleeps: raise :class:`Cancelled` once the task's flag is set."""
        if flag.is_set():
            raise Cancelled
