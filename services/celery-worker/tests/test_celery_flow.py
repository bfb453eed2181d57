"""The tasks' flow against a real HTTP callback server, run eagerly with ``.apply()``.

:class:`~tasklab_devtools.testing.fakeapi.FakeApi` checks every callback's signature
and nonce like the api and answers with ``CallbackReply`` JSON, moving a task only
forward. The tasks run their real
code (``.apply()`` executes them in this process, retries included); only the broker
is left out.
"""

from __future__ import annotations

import logging
import os
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import states
from celery.exceptions import Reject, SoftTimeLimitExceeded
from celery.result import EagerResult

import celery_app
import celery_tasks
from tasklab_common.messages import (
    API_ORIGIN_PREFIX,
    TaskMessage,
    TaskParams,
    celery_call,
)
from tasklab_common.models import Method, TaskKind, TaskStatus
from tasklab_common.work import SimulatedFailure, process_data
from tasklab_devtools.testing.fakeapi import FakeApi, retried

SECRET = "celery-flow-test-secret-0123456789"
MAX_RETRIES = 2

IN_PROGRESS = TaskStatus.IN_PROGRESS
RETRYING = TaskStatus.RETRYING
DONE = TaskStatus.DONE
FAILED = TaskStatus.FAILED


@pytest.fixture
def api() -> Iterator[FakeApi]:
    """A running :class:`FakeApi` on a free local port."""
    with FakeApi(SECRET) as server:
        yield server


@pytest.fixture(autouse=True)
def worker_env(api: FakeApi, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """A worker's settings pointing at ``api``, with fast retries; no ``.env`` file."""
    monkeypatch.chdir(tmp_path)
    env = {
        "RMQ_URL": "amqp://guest:guest@127.0.0.1:5672/",
        "API_URL": api.url,
        "CALLBACK_SECRET": SECRET,
        "MAX_RETRIES": str(MAX_RETRIES),
        "RETRY_BACKOFF": "0",
        "CALLBACK_MAX_WAIT": "0.5",
        "REQUEUE_DELAY": "0",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    celery_app.get_settings.cache_clear()
    yield
    celery_app.get_settings.cache_clear()


def message(kind: TaskKind = TaskKind.PROCESS_TASK, *, num: int = 1, **params: Any) -> TaskMessage:
    """A task as the api would submit it, with a fresh id."""
    if kind is TaskKind.PROCESS_DATA:
        params.setdefault("numbers", [3.0, 1.0, 2.0])
    return TaskMessage(
        task_id=uuid.uuid4().hex,
        num=num,
        kind=kind,
        method=Method.CELERY,
        params=TaskParams(**params),
    )


#: Celery's ``origin`` header of the api's messages.
API_ORIGIN = f"{API_ORIGIN_PREFIX}api-host"


def apply(msg: TaskMessage, origin: str | None = API_ORIGIN) -> EagerResult[Any]:
    """Run the task the api would publish for ``msg``, as a worker would receive it
    (``origin=None``: as other code would send it, e.g. the guide's ``.delay()``)."""
    name, args, kwargs = celery_call(msg)
    headers = {"origin": origin} if origin else None
    return celery_app.celery_app.tasks[name].apply(
        tuple(args), kwargs, task_id=msg.task_id, headers=headers
    )


def requeued(outcome: EagerResult[Any]) -> bool:
    """Whether a task that raised ``Reject`` (its message is not acked) asks for a requeue."""
    assert str(outcome.state) == states.REJECTED
    assert isinstance(outcome.result, Reject)
    rejection: Any = outcome.result  # the type stubs do not declare Reject.requeue
    return bool(rejection.requeue)


def test_process_task_reports_in_progress_then_done(
    api: FakeApi, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=celery_app.TASK_LOGGER)
    msg = message(num=7, duration=0.05)

    outcome = apply(msg)

    assert outcome.successful()
    result = outcome.get()
    assert result["status"] == "success"
    assert result["task_num"] == 7
    assert result["slept"] >= 0.05
    assert api.history(msg.task_id) == [(IN_PROGRESS, 1), (DONE, 1)]
    done = api.updates[-1]
    assert done.result == result
    assert all(u.worker == api.updates[0].worker and u.worker for u in api.updates)
    lines = [r.getMessage() for r in caplog.records if r.name == celery_app.TASK_LOGGER]
    assert lines == [
        "Celery Worker celery: Started processing task 7",
        "Celery Worker celery: Task 7 finished successfully",
    ]


def test_process_data_round_trip(api: FakeApi) -> None:
    msg = message(TaskKind.PROCESS_DATA, num=3, numbers=[4.0, 1.0, 7.0], duration=0.01)

    outcome = apply(msg)

    expected = process_data(3, [4.0, 1.0, 7.0])
    assert outcome.get() == expected
    assert api.history(msg.task_id) == [(IN_PROGRESS, 1), (DONE, 1)]
    assert api.updates[-1].result == expected


def test_failed_attempts_are_retried_until_done(api: FakeApi) -> None:
    msg = message(fail_times=MAX_RETRIES)

    outcome = apply(msg)

    assert outcome.successful()
    assert api.history(msg.task_id) == retried(3, DONE)
    retrying = [u for u in api.updates if u.status is RETRYING]
    assert all("SimulatedFailure" in (u.error or "") for u in retrying)


def test_no_attempt_left_reports_failed(api: FakeApi) -> None:
    msg = message(TaskKind.PROCESS_DATA, fail_times=MAX_RETRIES + 1)

    outcome = apply(msg)

    assert outcome.failed()
    assert isinstance(outcome.result, SimulatedFailure)
    assert api.history(msg.task_id) == retried(3, FAILED)
    assert "attempt 3" in (api.updates[-1].error or "")


def test_cancelled_task_is_skipped_without_work(api: FakeApi) -> None:
    msg = message(num=4, duration=60)
    api.cancel(msg.task_id)

    outcome = apply(msg)

    assert outcome.get() == {"status": "skipped", "task_num": 4, "task_status": "CANCELLED"}
    assert api.history(msg.task_id) == [(IN_PROGRESS, 1)]


def test_task_the_api_sent_but_does_not_know_is_skipped(api: FakeApi) -> None:
    """The api discarded it (it answered 503 when the broker's confirm was late)."""
    msg = message(duration=60)
    api.unknown.add(msg.task_id)

    outcome = apply(msg)

    assert outcome.get() == {"status": "skipped", "task_num": msg.num, "task_status": None}
    assert api.history(msg.task_id) == [(IN_PROGRESS, 1)]


def test_task_sent_by_other_code_runs_without_reports(api: FakeApi) -> None:
    """The guide's process_task.delay(n, timeout, 'celery') from a project's own code."""
    msg = message(num=99, duration=0.05)

    result = apply(msg, origin=None).get()

    assert result["status"] == "success"
    assert result["task_num"] == 99
    assert result["slept"] >= 0.05
    assert api.history(msg.task_id) == []  # the api is not even asked


@pytest.mark.parametrize("code", [401, 422])
def test_refused_report_requeues_the_message(api: FakeApi, code: int) -> None:
    api.refuse_with = code
    msg = message(duration=60)

    outcome = apply(msg)

    assert requeued(outcome)
    assert [(u.status, u.attempt) for u in api.refused] == [(IN_PROGRESS, 1)]


def test_unreachable_api_requeues_the_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("API_URL", "http://127.0.0.1:9/update_task_status_api/")
    celery_app.get_settings.cache_clear()

    outcome = apply(message())

    assert requeued(outcome)


def test_wrong_secret_is_refused_and_requeued(
    api: FakeApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CALLBACK_SECRET", "not-the-api-secret-0123456789")
    celery_app.get_settings.cache_clear()

    outcome = apply(message())

    assert requeued(outcome)
    assert api.updates == []


@pytest.mark.parametrize(
    ("name", "args", "kwargs", "reason"),
    [
        ("process_task", [1, -5], {}, "duration"),
        ("process_task", [1, 1], {"fail_times": 99}, "fail_times"),
        ("process_task", [1, 1], {"method": "carrier-pigeon"}, "Method"),
        ("process_data", [1, "1,2,3"], {}, "list of numbers"),
        ("process_data", [1, []], {}, "non-empty"),
    ],
)
def test_invalid_arguments_fail_without_retry(
    api: FakeApi, name: str, args: list[Any], kwargs: dict[str, Any], reason: str
) -> None:
    task_id = uuid.uuid4().hex

    outcome = celery_app.celery_app.tasks[name].apply(tuple(args), kwargs, task_id=task_id)

    assert not requeued(outcome)
    assert api.history(task_id) == [(FAILED, 1)]
    assert reason in (api.updates[0].error or "")


def test_callback_client_is_shared_within_a_process() -> None:
    assert celery_tasks.callback_client() is celery_tasks.callback_client()


def test_a_forked_process_makes_a_callback_client_of_its_own() -> None:
    """A prefork child never reports through the client (and connection) of the
    process it was forked from."""
    parents = id(celery_tasks.callback_client())
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: whether its client is a new one, as one byte
        try:
            os.write(write, b"1" if id(celery_tasks.callback_client()) != parents else b"0")
        finally:
            os._exit(0)
    os.close(write)
    answer = os.read(read, 1)
    os.close(read)
    os.waitpid(pid, 0)
    assert answer == b"1"
    assert id(celery_tasks.callback_client()) == parents


def test_retry_that_cannot_be_published_requeues_the_message(
    api: FakeApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Celery drops a message whose retry it cannot publish; the task requeues it instead.

    The task runs as a worker runs it (not eagerly), so its retry is really published,
    to a broker address where nothing listens.
    """
    monkeypatch.setitem(
        celery_app.celery_app.conf, "broker_url", "amqp://guest:guest@127.0.0.1:1//"
    )
    msg = message(fail_times=1)
    name, args, kwargs = celery_call(msg)
    task = celery_app.celery_app.tasks[name]
    task.push_request(
        id=msg.task_id,
        retries=0,
        hostname="celery@test",
        called_directly=False,
        origin=API_ORIGIN,
    )
    try:
        with pytest.raises(Reject) as caught:
            task.run(*args, **kwargs)
    finally:
        task.pop_request()

    rejection: Any = caught.value  # the type stubs do not declare Reject's attributes
    assert rejection.requeue
    assert "not published" in rejection.reason
    assert rejection.__cause__.requeue is False  # what Celery itself raised
    assert api.history(msg.task_id) == [(IN_PROGRESS, 1), (RETRYING, 1)]


def apply_with_soft_limit(msg: TaskMessage, after: float) -> EagerResult[Any]:
    """``apply(msg)`` with Celery's soft time limit striking ``after`` seconds in."""

    def soft_limit(signum: int, frame: object) -> None:
        raise SoftTimeLimitExceeded()

    previous = signal.signal(signal.SIGALRM, soft_limit)
    signal.setitimer(signal.ITIMER_REAL, after)
    try:
        return apply(msg)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_soft_time_limit_during_a_report_requeues_the_message(api: FakeApi) -> None:
    """Celery's soft time limit striking while a report waits for the api: the message
    is requeued (not acked without a final status)."""
    api.slow[DONE] = 3.0
    assert requeued(apply_with_soft_limit(message(duration=0.1), after=1.0))


def test_soft_time_limit_during_the_requeue_wait_still_requeues(
    api: FakeApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The limit striking while the worker waits REQUEUE_DELAY after a refused report."""
    monkeypatch.setenv("REQUEUE_DELAY", "3")
    celery_app.get_settings.cache_clear()
    api.refuse_with = 401
    assert requeued(apply_with_soft_limit(message(duration=0.1), after=0.5))
