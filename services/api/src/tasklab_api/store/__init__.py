"""The task store, split by concern:

- :mod:`.tasks`: :class:`TaskStore`, the only reader and writer of tasks;
- :mod:`.transitions`: what a worker's report or a user's cancel does to a task;
- :mod:`.housekeeping`: the sweeps of tasks nothing will report on, and of old history;
- :mod:`.notify`: telling the live streams of every change;
- :mod:`.writer`: the threads every write transaction runs on.
"""

from tasklab_api.store.housekeeping import NEVER_DELIVERED, RETRY_GONE
from tasklab_api.store.tasks import TaskStore, WorkerRow
from tasklab_api.store.transitions import (
    GAVE_UP,
    CancelResult,
    NotCancellable,
    ReplayError,
    TaskNotFound,
    UpdateResult,
)

__all__ = [
    "GAVE_UP",
    "NEVER_DELIVERED",
    "RETRY_GONE",
    "CancelResult",
    "NotCancellable",
    "ReplayError",
    "TaskNotFound",
    "TaskStore",
    "UpdateResult",
    "WorkerRow",
]
