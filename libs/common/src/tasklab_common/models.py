"""The task and status model shared by every service.

A status never moves backwards. Progress is ordered by ``(attempt, phase)``:
``PENDING`` is attempt 0; each attempt goes ``IN_PROGRESS`` then, when it fails and
another attempt is allowed, ``RETRYING``; the next attempt starts ``IN_PROGRESS``
again with a higher attempt number. A final status (``DONE``, ``FAILED``,
``CANCELLED``) supersedes every non-final one and is never replaced.
"""

from __future__ import annotations

from enum import StrEnum


class TaskStatus(StrEnum):
    PENDING = "PENDING"
    IN_PROGRESS = "IN_PROGRESS"
    RETRYING = "RETRYING"
    DONE = "DONE"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATUSES


class Method(StrEnum):
    CELERY = "celery"
    RABBITMQ = "rabbitmq"
    SYNC = "sync"

    @property
    def runs_on_celery(self) -> bool:
        """Whether Celery workers run its tasks (``sync`` too: the api waits for them)."""
        return self in CELERY_METHODS


class TaskKind(StrEnum):
    PROCESS_TASK = "process_task"
    PROCESS_DATA = "process_data"


#: The methods whose tasks Celery workers run; the consumer runs the others.
CELERY_METHODS: frozenset[Method] = frozenset({Method.CELERY, Method.SYNC})

FINAL_STATUSES: frozenset[TaskStatus] = frozenset(
    {TaskStatus.DONE, TaskStatus.FAILED, TaskStatus.CANCELLED}
)

#: Statuses a worker may report through the callback (PENDING is the api's own,
#: CANCELLED comes only from a user's cancel request).
WORKER_STATUSES: frozenset[TaskStatus] = frozenset(
    {TaskStatus.IN_PROGRESS, TaskStatus.RETRYING, TaskStatus.DONE, TaskStatus.FAILED}
)

#: Order of the non-final phases within one attempt.
PHASE_RANK: dict[TaskStatus, int] = {
    TaskStatus.PENDING: 0,
    TaskStatus.IN_PROGRESS: 1,
    TaskStatus.RETRYING: 2,
}


def progress_key(status: TaskStatus, attempt: int) -> tuple[int, int]:
    """Sort key of a task's progress; a greater key is further along."""
    if status.is_final:
        return (1, 0)
    return (0, attempt * 10 + PHASE_RANK[status])


def supersedes(
    new_status: TaskStatus, new_attempt: int, cur_status: TaskStatus, cur_attempt: int
) -> bool:
    """True when ``new_status`` at ``new_attempt`` moves a task forward.

    Nothing supersedes a final status, so a late, repeated or out-of-order update
    changes nothing.
    """
    if cur_status.is_final:
        return False
    return progress_key(new_status, new_attempt) > progress_key(cur_status, cur_attempt)


class Verdict(StrEnum):
    """What the api made of a worker's status report: the reply's ``verdict``, and the
    ``outcome`` label of the callback metric."""

    #: It moved the task forward.
    APPLIED = "applied"
    #: Late, repeated or out of order: recorded, the task unchanged.
    STALE = "stale"
    #: The same report (``event_id``) was received before: nothing recorded.
    DUPLICATE = "duplicate"
    #: One delivery too many of the same attempt: the task was marked FAILED instead,
    #: and its message is to be dead-lettered.
    GAVE_UP = "gave_up"
