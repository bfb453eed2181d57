"""The real prefork worker (``celery -A celery_app worker --concurrency=3``): its pool
processes' status reports go through the main process's relay, where the reports made
at once travel together.

A real broker (``TASKLAB_TEST_RMQ_URL`` when set, else a private node of the session),
:class:`~tasklab_devtools.testing.fakeapi.FakeApi` as the api, tasks published as the
api publishes them (Celery protocol 2, the api's ``origin``).
"""

from __future__ import annotations

import contextlib
import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from celery import Celery

from celery_conf import at_least_once
from tasklab_common.messages import API_ORIGIN_PREFIX, TaskMessage, TaskParams, celery_call
from tasklab_common.models import Method, TaskKind, TaskStatus
from tasklab_common.queues import CELERY_QUEUE
from tasklab_devtools.procs import ManagedProcess
from tasklab_devtools.testing.amqp import broker_vhost
from tasklab_devtools.testing.fakeapi import FakeApi
from tasklab_devtools.waiting import wait_until

SECRET = "celery-relay-test-secret-0123456789"
IN_PROGRESS, DONE = TaskStatus.IN_PROGRESS, TaskStatus.DONE
SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture(scope="module")
def broker_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with broker_vhost("celery-test", tmp_path_factory.mktemp("rabbitmq")) as vhost:
        yield vhost.url


@pytest.fixture
def api() -> Iterator[FakeApi]:
    with FakeApi(SECRET) as server:
        yield server
    assert server.bad_calls == [], "the worker sent unauthenticated or replayed callbacks"


@pytest.fixture
def sender(broker_url: str) -> Iterator[Celery]:
    """Publishes as the api does; the queue emptied first."""
    app = Celery("relay-test", broker=broker_url, set_as_current=False)
    app.conf.update(at_least_once(CELERY_QUEUE))
    with app.connection_for_write() as conn:
        app.amqp.queues[CELERY_QUEUE].bind(conn.default_channel).declare()
        app.amqp.queues[CELERY_QUEUE].bind(conn.default_channel).purge()
    yield app
    app.close()


@contextlib.contextmanager
def running_worker(
    broker_url: str, api: FakeApi, tmp_path: Path, **settings: str
) -> Iterator[ManagedProcess]:
    """``celery -A celery_app worker --concurrency=3`` against the broker and ``api``."""
    env = {key: os.environ[key] for key in ("PATH", "HOME", "LANG") if key in os.environ}
    env.update(
        RMQ_URL=broker_url,
        API_URL=api.url,
        CALLBACK_SECRET=SECRET,
        CALLBACK_MAX_WAIT="5",
        PYTHONPATH=str(SRC),
        LOG_FORMAT="text",
        **settings,
    )
    argv = [sys.executable, "-m", "celery", "-A", "celery_app", "worker", "--loglevel=info"]
    argv.append("--concurrency=3")
    process = ManagedProcess("celery-worker", argv, env, cwd=tmp_path, log_path=tmp_path / "log")
    process.start()
    try:
        wait_until(lambda: "ready." in process.log_text(), "the worker ready", 60)
        yield process
    finally:
        process.terminate(timeout=20)


@pytest.fixture
def worker(broker_url: str, api: FakeApi, tmp_path: Path) -> Iterator[ManagedProcess]:
    with running_worker(broker_url, api, tmp_path) as process:
        yield process


def publish(app: Celery, num: int) -> str:
    msg = TaskMessage(
        task_id=uuid.uuid4().hex,
        num=num,
        kind=TaskKind.PROCESS_TASK,
        method=Method.CELERY,
        params=TaskParams(duration=0),
    )
    name, args, kwargs = celery_call(msg)
    message = app.amqp.as_task_v2(
        msg.task_id, name, tuple(args), kwargs, origin=f"{API_ORIGIN_PREFIX}test"
    )
    with app.producer_or_acquire() as producer:
        app.amqp.send_task_message(producer, name, message, queue=CELERY_QUEUE)
    return msg.task_id


@pytest.mark.parametrize("takes_batches", [True, False])
def test_reports_of_the_pool_processes_made_at_once_travel_together(
    worker: ManagedProcess, sender: Celery, api: FakeApi, takes_batches: bool
) -> None:
    """While one report is on its way (a slow api), the reports the other pool processes
    make go together in the next request; every task ends DONE, reported once each. An
    api that refuses batches gets the reports one at a time."""
    api.slow[IN_PROGRESS] = 0.3
    api.takes_batches = takes_batches
    ids = [publish(sender, num) for num in range(1, 13)]
    for task_id in ids:
        assert api.wait_final(task_id, timeout=30).status is DONE
    assert [api.history(task_id) for task_id in ids] == [[(IN_PROGRESS, 1), (DONE, 1)]] * 12
    workers = {u.worker or "" for u in api.updates}
    assert len(workers) == 1 and workers.pop().startswith("celery@"), workers
    log = worker.log_text()
    if takes_batches:
        assert max(api.request_sizes) > 1, api.request_sizes
        assert "refused a batch" not in log
    else:
        assert set(api.request_sizes) == {1}
        assert log.count("the api refused a batch of reports") == 1, log


def test_a_report_the_api_refuses_requeues_through_the_relay(
    worker: ManagedProcess, sender: Celery, api: FakeApi
) -> None:
    """The refusal the relay got comes back to the pool process with its reason, which
    requeues the task; once the api takes reports again the task ends DONE."""
    api.refuse_with = 400
    task_id = publish(sender, 1)
    wait_until(lambda: len(api.refused) >= 2, "the report refused twice", 30)
    assert "refused: 400" in worker.log_text()
    api.refuse_with = None
    assert api.wait_final(task_id, timeout=30).status is DONE


def test_without_a_relay_the_pool_processes_report_on_their_own(
    broker_url: str, sender: Celery, api: FakeApi, tmp_path: Path
) -> None:
    """A temporary directory whose path is too long for a Unix socket: the worker starts
    all the same, says so, and every task ends DONE through the pool processes' own
    reports."""
    deep = tmp_path / ("d" * 100)
    deep.mkdir()
    with running_worker(broker_url, api, tmp_path, TMPDIR=str(deep)) as worker:
        ids = [publish(sender, num) for num in range(1, 4)]
        for task_id in ids:
            assert api.wait_final(task_id, timeout=30).status is DONE
        assert "no report relay" in worker.log_text()
