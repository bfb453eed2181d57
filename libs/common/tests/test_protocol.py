"""The worker protocol (tasklab_common.protocol) against the api's forward-only rule: start_attempt
takes the next attempt when the api has its own over; a delivery's reports and endings."""

from __future__ import annotations

import logging

from tasklab_common.handback import HandedBack
from tasklab_common.messages import CallbackReply, TaskMessage
from tasklab_common.models import TaskStatus, supersedes
from tasklab_common.protocol import Ending, RetryRule, TaskWorker, start_attempt
from tasklab_common.work import SimulatedFailure


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


def _worker(api: Api, max_retries: int = 1) -> TaskWorker:
    return TaskWorker(
        lambda update: api.report(update.status, update.attempt),
        runner="Test Worker",
        name="t",
        worker="t@host",
        rule=RetryRule(max_retries, backoff=0.5, backoff_max=4.0),
        log=logging.getLogger("test.protocol"),
    )


def _msg(**params: object) -> TaskMessage:
    return TaskMessage.model_validate(
        {"task_id": "t1", "num": 1, "kind": "process_task", "method": "rabbitmq", "params": params}
    )


def test_a_failed_attempt_is_retried_in_place_then_done() -> None:
    api = Api(TaskStatus.PENDING, 0)
    waits: list[tuple[int, float]] = []
    delivery = _worker(api).run(
        _msg(fail_times=1), 1, lambda _exc, attempt, delay: waits.append((attempt, delay))
    )
    assert (delivery.ending, delivery.attempt) == (Ending.DONE, 2)
    assert delivery.result is not None and delivery.result["task_num"] == 1
    assert waits == [(1, 0.5)]
    assert api.reports == [
        (TaskStatus.IN_PROGRESS, 1),
        (TaskStatus.RETRYING, 1),
        (TaskStatus.IN_PROGRESS, 2),
        (TaskStatus.DONE, 2),
    ]


def test_the_last_attempt_allowed_fails_for_good() -> None:
    api = Api(TaskStatus.PENDING, 0)
    delivery = _worker(api, max_retries=0).run(_msg(fail_times=5), 1, _no_retry)
    assert delivery.ending is Ending.FAILED
    assert isinstance(delivery.error, SimulatedFailure)
    assert api.reports == [(TaskStatus.IN_PROGRESS, 1), (TaskStatus.FAILED, 1)]


def test_a_handed_back_attempt_is_reported_retrying() -> None:
    api = Api(TaskStatus.PENDING, 0)

    def sleep(_seconds: float) -> None:
        raise HandedBack

    delivery = _worker(api).run(_msg(duration=5), 1, _no_retry, sleep=sleep)
    assert delivery.ending is Ending.HANDED_BACK
    assert api.reports == [(TaskStatus.IN_PROGRESS, 1), (TaskStatus.RETRYING, 1)]


def test_a_task_the_api_says_not_to_run_is_skipped() -> None:
    api = Api(TaskStatus.CANCELLED, 0)
    delivery = _worker(api).run(_msg(), 1, _no_retry)
    assert delivery.ending is Ending.SKIPPED
    assert api.reports == [(TaskStatus.IN_PROGRESS, 1)]


def _no_retry(exc: Exception, _attempt: int, _delay: float) -> None:
    raise AssertionError("no retry expected") from exc
