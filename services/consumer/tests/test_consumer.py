"""The consumer end to end: a real broker, a real HTTP callback server, the real process.

Nothing is mocked:

- the broker is ``TASKLAB_TEST_RMQ_URL`` when set (its vhost must exist); otherwise a
  private RabbitMQ node of the session (own name, ports and data dir), in a vhost of
  its own;
- :class:`~tasklab_devtools.testing.fakeapi.FakeApi` is a small HTTP server that checks
  signatures like the api and answers with ``CallbackReply`` JSON, following the api's
  "only move forward" rule;
- :class:`ConsumerProcess` runs ``python -m tasklab_consumer`` and captures its output.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from pathlib import Path

import pytest

from tasklab_common.messages import (
    TaskMessage,
    TaskParams,
)
from tasklab_common.models import Method, TaskKind, TaskStatus
from tasklab_devtools.testing.amqp import BrokerVhost, broker_vhost
from tasklab_devtools.testing.fakeapi import FakeApi, retried
from tasklab_devtools.waiting import wait_until

SECRET = "consumer-test-secret-0123456789"


def task_body(
    num: int,
    *,
    duration: float = 0.0,
    fail_times: int = 0,
    numbers: list[float] | None = None,
) -> tuple[str, bytes]:
    """A fresh task's id and its direct-queue message body."""
    kind = TaskKind.PROCESS_DATA if numbers else TaskKind.PROCESS_TASK
    msg = TaskMessage(
        task_id=uuid.uuid4().hex,
        num=num,
        kind=kind,
        method=Method.RABBITMQ,
        params=TaskParams(duration=duration, fail_times=fail_times, numbers=numbers),
    )
    return msg.task_id, msg.model_dump_json().encode()


class ConsumerProcess:
    """``python -m tasklab_consumer`` run with the given settings; output captured."""

    def __init__(self, env: dict[str, str], cwd: Path) -> None:
        base = {key: os.environ[key] for key in ("PATH", "HOME", "LANG") if key in os.environ}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tasklab_consumer"],
            env={**base, **env},
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def count(self, text: str) -> int:
        """How many output lines contain ``text``."""
        return sum(text in line for line in list(self.lines))

    def wait_for(self, text: str, *, times: int = 1, timeout: float = 10.0) -> None:
        """Wait until ``text`` appeared on ``times`` output lines."""

        def seen() -> bool:
            if self.proc.poll() is not None and self.count(text) < times:
                self._reader.join(timeout=2)
                raise AssertionError(f"consumer exited early:\n{self.output}")
            return self.count(text) >= times

        wait_until(seen, f"{text!r} x{times} in the consumer's output", timeout)

    def signal(self, signum: int = signal.SIGTERM) -> None:
        self.proc.send_signal(signum)

    def wait_exit(self, timeout: float = 20.0) -> int:
        code = self.proc.wait(timeout=timeout)
        self._reader.join(timeout=2)
        return code

    def stop(self) -> int:
        """SIGTERM, then the exit code."""
        if self.proc.poll() is None:
            self.signal(signal.SIGTERM)
        return self.wait_exit()

    def kill(self) -> None:
        """End the process at once if it still runs (test teardown)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


# --- fixtures ---

StartConsumer = Callable[..., ConsumerProcess]


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerVhost]:
    """``TASKLAB_TEST_RMQ_URL``, or a private node's vhost for the session."""
    with broker_vhost("consumer-test", tmp_path_factory.mktemp("rabbitmq")) as vhost:
        yield vhost


@pytest.fixture
def queue(broker: BrokerVhost) -> BrokerVhost:
    """The broker, with an empty direct queue."""
    broker.purge()
    return broker


@pytest.fixture
def api() -> Iterator[FakeApi]:
    """A running fake api; at the end, no callback may have failed authentication."""
    with FakeApi(SECRET) as server:
        yield server
    assert server.bad_calls == [], "the consumer sent unauthenticated or replayed callbacks"


@pytest.fixture
def start_consumer(queue: BrokerVhost, api: FakeApi, tmp_path: Path) -> Iterator[StartConsumer]:
    """Start ``python -m tasklab_consumer`` against the test broker and api."""
    started: list[ConsumerProcess] = []

    def start(**settings: object) -> ConsumerProcess:
        env = {
            "RMQ_URL": queue.url,
            "API_URL": api.url,
            "CALLBACK_SECRET": SECRET,
            "CONSUMER_NAME": "consumer@test",
            "CALLBACK_TIMEOUT": "2",
            "CALLBACK_MAX_WAIT": "2",
            "RETRY_BACKOFF": "0.1",
            "RETRY_BACKOFF_MAX": "0.2",
            "RECONNECT_BACKOFF": "0.2",
            "RECONNECT_BACKOFF_MAX": "1",
            "REQUEUE_DELAY": "0.2",
            "LOG_LEVEL": "INFO",
            "LOG_FORMAT": "text",
        }
        env.update({key.upper(): str(value) for key, value in settings.items()})
        process = ConsumerProcess(env, cwd=tmp_path)
        started.append(process)
        process.wait_for("connected; consuming")
        return process

    yield start
    for process in started:
        process.kill()


# --- tests ---

IN_PROGRESS, RETRYING = TaskStatus.IN_PROGRESS, TaskStatus.RETRYING
DONE, FAILED = TaskStatus.DONE, TaskStatus.FAILED
STARTED = "RabbitMQ Consumer consumer@test: Started processing task {}"
FINISHED = "RabbitMQ Consumer consumer@test: Task {} finished successfully"
LOST = "broker connection lost"


def test_missing_settings_exit_with_a_one_line_error(tmp_path: Path) -> None:
    env = {"PATH": os.environ["PATH"], "RMQ_URL": "amqp://guest:guest@127.0.0.1:5672/"}
    done = subprocess.run(
        [sys.executable, "-m", "tasklab_consumer"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode != 0
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "CALLBACK_SECRET" in lines[0]
    assert "API_URL" in lines[0]


def test_tasks_run_to_done_and_are_acked(
    start_consumer: StartConsumer, queue: BrokerVhost, api: FakeApi
) -> None:
    consumer = start_consumer()
    sleeper, body = task_body(1, duration=0.2)
    queue.publish(body)
    stats, body = task_body(2, numbers=[1.0, 2.0, 6.0])
    queue.publish(body)

    done = api.wait_final(sleeper)
    assert done.status is DONE
    assert done.worker == "consumer@test"
    assert done.result is not None
    assert done.result["status"] == "success"
    assert done.result["task_num"] == 1
    assert api.history(sleeper) == [(IN_PROGRESS, 1), (DONE, 1)]
    computed = api.wait_final(stats).result
    assert computed is not None
    assert (computed["sum"], computed["median"]) == (9.0, 2.0)
    consumer.wait_for(FINISHED.format(1))
    consumer.wait_for(FINISHED.format(2))
    assert consumer.count(STARTED.format(1)) == 1

    assert consumer.stop() == 0
    assert queue.ready_messages() == 0  # unacked messages would be back in the queue


def test_long_task_keeps_the_connection_alive(
    start_consumer: StartConsumer, queue: BrokerVhost, api: FakeApi
) -> None:
    consumer = start_consumer(consumer_heartbeat=2)
    task_id, body = task_body(1, duration=7)
    queue.publish(body)

    assert api.wait_final(task_id, timeout=15).status is DONE
    assert api.history(task_id) == [(IN_PROGRESS, 1), (DONE, 1)]
    assert consumer.stop() == 0
    assert consumer.count(LOST) == 0, consumer.output
    assert consumer.count("connected; consuming") == 1
    assert queue.ready_messages() == 0


def test_a_cancel_notice_stops_the_running_task_and_acks_it(
    start_consumer: StartConsumer, queue: BrokerVhost, api: FakeApi
) -> None:
    consumer = start_consumer()
    task_id, body = task_body(5, duration=60)
    queue.publish(body)
    wait_until(lambda: api.history(task_id) == [(IN_PROGRESS, 1)], "task 5 started", 10)
    api.no_proceed.add(task_id)  # the api has it CANCELLED now
    queue.publish_cancel(task_id)

    consumer.wait_for("Task 5 cancelled: its work was stopped", timeout=5)
    assert api.history(task_id) == [(IN_PROGRESS, 1)]  # nothing to report: it is final
    assert consumer.stop() == 0
    assert queue.ready_messages() == 0  # acknowledged, not requeued
    assert consumer.count(FINISHED.format(5)) == 0


def test_a_cancel_notice_of_a_task_elsewhere_changes_nothing(
    start_consumer: StartConsumer, queue: BrokerVhost, api: FakeApi
) -> None:
    consumer = start_consumer()
    task_id, body = task_body(6, duration=1)
    queue.publish(body)
    wait_until(lambda: bool(api.history(task_id)), "task 6 started", 10)
    queue.publish_cancel("some-other-task")
    assert api.wait_final(task_id).status is DONE
    assert consumer.count("cancelled") == 0
    assert consumer.stop() == 0


def test_failed_attempts_are_retried_until_done_or_failed(
    start_consumer: StartConsumer, queue: BrokerVhost, api: FakeApi
) -> None:
    consumer = start_consumer(max_retries=2)
    recovers, body = task_body(1, fail_times=2)
    queue.publish(body)
    gives_up, body = task_body(2, fail_times=3)
    queue.publish(body)

    assert api.wait_final(recovers).status is DONE
    assert api.history(recovers) == retried(3, DONE)
    failed = api.wait_final(gives_up)
    assert failed.status is FAILED
    assert failed.attempt == 3
    assert failed.error is not None
    assert "simulated failure of task 2, attempt 3" in failed.error
    retrying = [u for u in api.updates if u.task_id == gives_up and u.status is RETRYING]
    assert all(u.error and "SimulatedFailure" in u.error for u in retrying)

    assert consumer.stop() == 0
    assert queue.ready_messages() == 0


def test_task_the_api_refuses_is_skipped_and_acked(
    start_consumer: StartConsumer, queue: BrokerVhost, api: FakeApi
) -> None:
    consumer = start_consumer(log_format="json")
    task_id, body = task_body(7)
    api.no_proceed.add(task_id)
    queue.publish(body)

    consumer.wait_for("Task 7 skipped")
    assert api.history(task_id) == [(IN_PROGRESS, 1)]
    assert consumer.count("Started processing task 7") == 0
    assert consumer.stop() == 0
    assert queue.ready_messages() == 0
    records = [json.loads(line) for line in consumer.lines]
    skipped = next(r for r in records if "skipped" in r["msg"])
    assert (skipped["task_id"], skipped["task_num"]) == (task_id, 7)
    assert skipped["worker"] == "consumer@test"


def test_malformed_bodies_are_rejected_without_requeue(
    start_consumer: StartConsumer, queue: BrokerVhost, api: FakeApi
) -> None:
    consumer = start_consumer()
    queue.publish(b"this is not json")
    queue.publish(json.dumps({"task_id": "bad-task", "num": "three"}).encode())
    good, body = task_body(3)
    queue.publish(body)

    assert api.wait_final(good).status is DONE
    failed = api.wait_final("bad-task")
    assert failed.status is FAILED
    assert failed.error is not None
    assert "malformed task message" in failed.error
    assert consumer.stop() == 0
    assert consumer.count("message rejected") == 2  # once each: not redelivered
    assert queue.ready_messages() == 0


def test_undeliverable_report_requeues_the_message(
    start_consumer: StartConsumer, queue: BrokerVhost, api: FakeApi
) -> None:
    consumer = start_consumer(callback_max_wait=0.5)
    task_id, body = task_body(4)
    api.refuse_with = 500  # the api answers 500
    queue.publish(body)
    consumer.wait_for("task 4 requeued")
    api.stop()  # then nothing listens at all
    consumer.wait_for("task 4 requeued", times=3)
    assert api.history(task_id) == []

    api.refuse_with = None
    api.start()
    assert api.wait_final(task_id).status is DONE
    assert consumer.stop() == 0
    assert queue.ready_messages() == 0


def test_refused_reports_are_not_a_redelivery_loop(
    start_consumer: StartConsumer, queue: BrokerVhost, api: FakeApi
) -> None:
    """A consumer whose reports the api refuses (here: a wrong secret) waits
    REQUEUE_DELAY before each requeue instead of hammering the api (without the wait:
    thousands of refused calls a second)."""
    consumer = start_consumer(callback_secret="w" * 32, requeue_delay=0.5)
    task_id, body = task_body(8)
    queue.publish(body)
    consumer.wait_for("task 8 requeued")
    time.sleep(2.0)
    refused = len(api.bad_calls)
    assert 1 <= refused <= 8, refused  # about one per 0.5 s
    assert consumer.stop() == 0
    assert queue.ready_messages() == 1  # kept, for when the secret is fixed
    assert api.history(task_id) == []
    api.bad_calls.clear()  # expected here


def test_malformed_message_is_kept_until_its_failure_is_reported(
    start_consumer: StartConsumer, queue: BrokerVhost, api: FakeApi
) -> None:
    consumer = start_consumer(callback_max_wait=0.3)
    api.refuse_with = 500  # the api answers 500
    queue.publish(json.dumps({"task_id": "bad-task", "num": "three"}).encode())
    consumer.wait_for("could not report task bad-task as FAILED (requeued)")
    api.refuse_with = None
    failed = api.wait_final("bad-task")
    assert failed.status is FAILED
    assert consumer.stop() == 0
    assert queue.ready_messages() == 0


def test_sigterm_lets_the_running_task_finish(
    start_consumer: StartConsumer, queue: BrokerVhost, api: FakeApi
) -> None:
    consumer = start_consumer(consumer_concurrency=1)
    running, body = task_body(5, duration=2)
    queue.publish(body)
    waiting, body = task_body(6)
    queue.publish(body)
    consumer.wait_for(STARTED.format(5))

    consumer.signal(signal.SIGTERM)
    assert consumer.wait_exit() == 0
    assert api.history(running) == [(IN_PROGRESS, 1), (DONE, 1)]
    assert api.history(waiting) == []  # consuming stopped before it was delivered
    assert queue.ready_messages() == 1  # task 5 acked, task 6 still queued


def test_a_stopping_consumer_gives_back_a_task_it_cannot_report(
    start_consumer: StartConsumer, queue: BrokerVhost, api: FakeApi
) -> None:
    """The api gone with the workers (``helm uninstall``): a task's DONE cannot be
    reported. The stopping consumer retries it ``CALLBACK_STOPPING_WAIT`` seconds, not
    ``CALLBACK_MAX_WAIT`` (its pod would stay up that long), then exits with the message
    back in the queue: the task runs again once an api is back."""
    consumer = start_consumer(
        consumer_concurrency=1, callback_max_wait=600, callback_stopping_wait=1, requeue_delay=0
    )
    task_id, body = task_body(7, duration=2)
    queue.publish(body)
    consumer.wait_for(STARTED.format(7))
    api.refuse_with = 503
    consumer.signal(signal.SIGTERM)
    assert consumer.wait_exit(timeout=30) == 0
    assert "(the worker is stopping)" in consumer.output
    assert api.history(task_id) == [(IN_PROGRESS, 1)]
    assert queue.ready_messages() == 1


def run_tasks(
    consumer: ConsumerProcess, queue: BrokerVhost, nums: Sequence[int], *, duration: float
) -> list[str]:
    """Publish a task of ``duration`` s per number and wait until ``consumer`` runs them
    all; their ids."""
    ids = []
    for num in nums:
        task_id, body = task_body(num, duration=duration)
        queue.publish(body)
        ids.append(task_id)
    for num in nums:
        consumer.wait_for(STARTED.format(num))
    return ids


def last_runs(api: FakeApi, ids: Sequence[str]) -> list[tuple[datetime, datetime]]:
    """(start, end) of each task's last run, as its last IN_PROGRESS and DONE reports
    say, in the order they started."""
    runs = []
    for task_id in ids:
        reports = api.reports(task_id)
        started = [u.at for u in reports if u.status is IN_PROGRESS][-1]
        finished = [u.at for u in reports if u.status is DONE][-1]
        runs.append((started, finished))
    return sorted(runs)


def test_redelivered_messages_run_one_at_a_time(
    start_consumer: StartConsumer, queue: BrokerVhost, api: FakeApi
) -> None:
    """After a crash, every message the dead process held comes back redelivered; any
    of them may be the one that killed it, so each runs alone: a poison message cannot
    take its neighbours down with it on every delivery."""
    first = start_consumer(consumer_concurrency=3)
    ids = run_tasks(first, queue, (21, 22, 23), duration=2)
    first.proc.kill()  # kill -9 while all three run side by side
    first.wait_exit()

    second = start_consumer(consumer_concurrency=3)
    for task_id in ids:
        assert api.wait_final(task_id, timeout=20).status is DONE
    for task_id in ids:
        statuses = [u.status for u in api.reports(task_id)]
        assert statuses.count(IN_PROGRESS) == 2 and statuses.count(DONE) == 1, statuses
    runs = last_runs(api, ids)  # killed once, then run
    for (_, end), (start, _) in itertools.pairwise(runs):
        assert end <= start, f"redelivered tasks overlapped: {runs}"
    assert second.count("to run alone") >= 1
    # New messages share the threads again once the redelivered ones are done.
    fresh = run_tasks(second, queue, (24, 25), duration=1)
    assert all(api.history(t)[-1] == (IN_PROGRESS, 1) for t in fresh)  # both running
    assert all(api.wait_final(t).status is DONE for t in fresh)
    assert second.stop() == 0
    assert queue.ready_messages() == 0


def test_tasks_handed_back_at_a_stop_run_side_by_side_on_the_next_consumer(
    start_consumer: StartConsumer, queue: BrokerVhost, api: FakeApi
) -> None:
    """Tasks a stopping consumer hands back go back to the queue as fresh messages: the
    next consumer runs them together, as first deliveries. (Requeued as they were, they
    came back flagged redelivered, like those of a consumer that crashed, and each
    waited to run alone: after a scale-down, one by one.)"""
    first = start_consumer(consumer_concurrency=2, hand_back_after=0.5)
    ids = run_tasks(first, queue, (31, 32), duration=4)
    first.signal(signal.SIGTERM)
    assert first.wait_exit() == 0
    assert [api.history(t) for t in ids] == [[(IN_PROGRESS, 1), (RETRYING, 1)]] * 2
    assert queue.ready_messages() == 2

    second = start_consumer(consumer_concurrency=2)
    for task_id in ids:
        assert api.wait_final(task_id, timeout=20).status is DONE
    for task_id in ids:
        assert api.history(task_id)[-2:] == [(IN_PROGRESS, 2), (DONE, 2)]
    runs = last_runs(api, ids)
    assert runs[1][0] < runs[0][1], f"the two ran one after the other: {runs}"
    assert second.count("to run alone") == 0, second.output
    assert second.stop() == 0
    assert queue.ready_messages() == 0


def test_second_signal_exits_at_once(
    start_consumer: StartConsumer, queue: BrokerVhost, api: FakeApi
) -> None:
    consumer = start_consumer()
    task_id, body = task_body(8, duration=60)
    queue.publish(body)
    consumer.wait_for(STARTED.format(8))

    consumer.signal(signal.SIGINT)
    consumer.wait_for("finishing running tasks")
    consumer.signal(signal.SIGINT)
    assert consumer.wait_exit(timeout=5) != 0
    assert api.history(task_id) == [(IN_PROGRESS, 1)]
    wait_until(lambda: queue.ready_messages() == 1, "the unacked task back in the queue")


def test_reconnects_after_the_broker_closes_the_connection(
    start_consumer: StartConsumer, queue: BrokerVhost, api: FakeApi
) -> None:
    consumer = start_consumer()
    # (long enough to outlast rabbitmqctl's start on a loaded machine: a task over before
    # the close would be acked on the old connection, and nothing would be interrupted)
    interrupted, body = task_body(9, duration=8)
    queue.publish(body)
    consumer.wait_for(STARTED.format(9))

    if queue.node is None:
        pytest.skip("closing connections by force needs the tests' own broker node")
    queue.close_all_connections()
    consumer.wait_for(LOST)
    consumer.wait_for("connected; consuming", times=2)
    # The first run of task 9 cannot be acked on the new channel: the broker
    # redelivers it, and the api ignores the second run's repeated reports.
    consumer.wait_for("connection lost before a delivery could be settled", timeout=20)
    assert api.wait_final(interrupted, timeout=20).status is DONE

    after, body = task_body(10)
    queue.publish(body)
    assert api.wait_final(after).status is DONE
    assert consumer.stop() == 0
    assert queue.ready_messages() == 0


def test_a_broker_that_never_answers_is_retried_not_fatal(tmp_path: Path) -> None:
    """A hung broker (TCP accepted, no AMQP handshake): the consumer times the
    handshake out and keeps reconnecting instead of exiting."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        port = silent.getsockname()[1]
        env = {
            "PATH": os.environ["PATH"],
            "RMQ_URL": f"amqp://u:p@127.0.0.1:{port}/%2F?socket_timeout=1&stack_timeout=1",
            "API_URL": "http://127.0.0.1:9/update_task_status_api/",
            "CALLBACK_SECRET": SECRET,
            "RECONNECT_BACKOFF": "0.1",
            "RECONNECT_BACKOFF_MAX": "0.2",
        }
        consumer = ConsumerProcess(env, cwd=tmp_path)
        try:
            consumer.wait_for("reconnecting in", times=2, timeout=30)
            assert "Traceback" not in consumer.output
            assert consumer.stop() == 0
        finally:
            consumer.kill()


@pytest.mark.parametrize("takes_batches", [True, False])
def test_reports_made_at_once_travel_together(
    start_consumer: StartConsumer, queue: BrokerVhost, api: FakeApi, takes_batches: bool
) -> None:
    """While one report is on its way (a slow api), the reports the other threads make
    go together in the next request; each task gets its own reply and ends DONE. An api
    that refuses batches gets them one at a time, and nothing is lost."""
    api.slow[IN_PROGRESS] = 0.3
    api.takes_batches = takes_batches
    consumer = start_consumer(consumer_concurrency=3)
    ids = run_tasks(consumer, queue, range(1, 10), duration=0)
    for task_id in ids:
        assert api.wait_final(task_id).status is DONE
    assert [api.history(task_id) for task_id in ids] == [[(IN_PROGRESS, 1), (DONE, 1)]] * 9
    if takes_batches:
        assert max(api.request_sizes) > 1, api.request_sizes
        assert consumer.count("refused a batch") == 0
    else:
        assert set(api.request_sizes) == {1}
        assert consumer.count("the api refused a batch of reports") == 1
