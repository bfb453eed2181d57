"""start_attempt: a worker takes the next attempt when the api has its own over."""

from __future__ import annotations

from tasklab_common.handback import start_attempt
from tasklab_common.messages import CallbackReply
from tasklab_common.models import TaskStatus, supersedes


class Api:
    """The api's forward-only rule over one task, as the store applies it."""

    def __init__(self, status: TaskStatus, attempts: int) -> None:
        self.status, self.attempts = status, attempts
        self.reports: list[tuple[TaskStatus, int]] = []

    def report(self, status: TaskStatus, attempt: int) -> CallbackReply:
        self.reports.append((status, attempt))
        applied = supersedes(status, attempt, self.status, self.attempts)
        if applied:
            self.status, self.attempts = status, max(self.attempts, attempt)
        return CallbackReply(
            applied=applied,
            status=self.status,
            proceed=not self.status.is_final,
            attempts=self.attempts,
        )


def test_a_fresh_task_starts_the_proposed_attempt() -> None:
    api = Api(TaskStatus.PENDING, 0)
    reply, attempt = start_attempt(api.report, 1)
    assert (reply.applied, attempt) == (True, 1)
    assert api.reports == [(TaskStatus.IN_PROGRESS, 1)]


def test_a_handed_back_task_runs_as_the_next_attempt() -> None:
    api = Api(TaskStatus.RETRYING, 1)  # attempt 1 handed back, message requeued
    reply, attempt = start_attempt(api.report, 1)
    assert (reply.applied, attempt, api.status, api.attempts) == (
        True,
        2,
        TaskStatus.IN_PROGRESS,
        2,
    )


def test_a_redelivery_after_a_crash_runs_the_same_attempt() -> None:
    api = Api(TaskStatus.IN_PROGRESS, 1)  # its worker died mid-run: no outcome
    reply, attempt = start_attempt(api.report, 1)
    assert attempt == 1 and reply.proceed
    assert api.reports == [(TaskStatus.IN_PROGRESS, 1)]


def test_a_final_task_is_not_started_again() -> None:
    api = Api(TaskStatus.DONE, 2)
    reply, attempt = start_attempt(api.report, 1)
    assert not reply.proceed and attempt == 1
