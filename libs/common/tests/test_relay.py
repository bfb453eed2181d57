"""The report relay: forked processes' reports through their parent, to a real HTTP
callback server (:class:`~tasklab_devtools.testing.fakeapi.FakeApi`)."""

from __future__ import annotations

import multiprocessing
import os
import signal
import socket
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from types import FrameType

import pytest

from tasklab_common.callback import CallbackClient, CallbackError
from tasklab_common.messages import MAX_REPORTS_PER_REQUEST, CallbackReply, StatusUpdate
from tasklab_common.models import TaskStatus
from tasklab_common.relay import RelayClient, ReportRelay
from tasklab_devtools.testing.fakeapi import FakeApi
from tasklab_devtools.waiting import wait_until

SECRET = "relay-test-secret-0123456789"
IN_PROGRESS, DONE = TaskStatus.IN_PROGRESS, TaskStatus.DONE
FORK = multiprocessing.get_context("fork")


@pytest.fixture
def api() -> Iterator[FakeApi]:
    with FakeApi(SECRET) as server:
        yield server
    assert server.bad_calls == []


@pytest.fixture
def relay(api: FakeApi) -> Iterator[ReportRelay]:
    client = CallbackClient(api.url, SECRET, max_wait=1.0, backoff=0.01, batching=True)
    server = ReportRelay(client).start()
    yield server
    server.close()


def update(status: TaskStatus = IN_PROGRESS, task_id: str | None = None) -> StatusUpdate:
    return StatusUpdate(task_id=task_id or uuid.uuid4().hex, status=status, worker="celery@test")


def in_child(job: Callable[[], str]) -> tuple[multiprocessing.process.BaseProcess, Connection]:
    """``job`` in a forked process; its outcome (what it returned, or the exception's
    type and text) comes back on the returned pipe."""
    receiving, sending = FORK.Pipe(duplex=False)

    def run() -> None:
        try:
            outcome = job()
        except Exception as exc:
            outcome = f"{type(exc).__name__}: {exc}"
        sending.send(outcome)

    process = FORK.Process(target=run)
    process.start()
    return process, receiving


def outcome_of(child: tuple[multiprocessing.process.BaseProcess, Connection]) -> str:
    process, pipe = child
    if not pipe.poll(20):
        state = f"alive: {process.is_alive()}, exit code {process.exitcode}"
        raise AssertionError(f"the child never answered ({state})")
    result: str = pipe.recv()
    process.join(10)
    assert process.exitcode == 0
    return result


def test_reports_of_several_processes_made_at_once_travel_together(
    api: FakeApi, relay: ReportRelay
) -> None:
    """While one report is on its way (a slow api), the reports other processes make go
    together in the next request; each process gets the reply to its own report."""
    api.slow[IN_PROGRESS] = 0.4
    reports = [update() for _ in range(6)]

    def report(one: StatusUpdate) -> Callable[[], str]:
        return lambda: RelayClient(relay.path).report(one).model_dump_json()

    children = [in_child(report(one)) for one in reports]
    replies = [CallbackReply.model_validate_json(outcome_of(child)) for child in children]
    assert all(reply.applied and reply.status is IN_PROGRESS for reply in replies)
    assert sorted(u.task_id for u in api.updates) == sorted(u.task_id for u in reports)
    assert len(api.request_sizes) < len(reports) and max(api.request_sizes) > 1, api.request_sizes


def test_reports_of_connected_processes_made_while_one_is_on_its_way_go_in_the_next_request(
    api: FakeApi, relay: ReportRelay
) -> None:
    """Processes connected long before (as pool processes are) report while one report
    waits for a slow api: their reports go together in the next request, each process
    with its own reply."""
    go = FORK.Event()
    reports = [update(DONE) for _ in range(4)]

    def warm_then_report(one: StatusUpdate) -> Callable[[], str]:
        def job() -> str:
            client = RelayClient(relay.path)
            assert client.report(update(DONE)).applied  # connected, and a report done
            assert go.wait(20)
            return client.report(one).model_dump_json()

        return job

    children = [in_child(warm_then_report(one)) for one in reports]
    wait_until(lambda: len(api.updates) == len(reports), "the processes' first reports", 20)
    api.slow[IN_PROGRESS] = 0.4
    before = len(api.request_sizes)
    slow = threading.Thread(target=lambda: RelayClient(relay.path).report(update()))
    slow.start()
    wait_until(lambda: len(api.request_sizes) == before + 1, "the slow report on its way", 20)
    go.set()
    replies = [CallbackReply.model_validate_json(outcome_of(child)) for child in children]
    slow.join(10)
    assert [(r.applied, r.status) for r in replies] == [(True, DONE)] * len(reports)
    assert api.request_sizes[before + 1 :] == [len(reports)], api.request_sizes


def test_a_process_reports_over_one_connection_and_gets_each_reply(
    api: FakeApi, relay: ReportRelay
) -> None:
    client = RelayClient(relay.path)
    task_id = uuid.uuid4().hex
    api.unknown.add("gone")
    assert client.report(update(IN_PROGRESS, task_id)).proceed
    done = client.report(update(DONE, task_id))
    assert done.applied and done.status is DONE and not done.proceed
    assert client.report(update(DONE, task_id)).applied is False  # a duplicate
    assert client.report(update(IN_PROGRESS, "gone")).unknown
    assert api.history(task_id) == [(IN_PROGRESS, 1), (DONE, 1), (DONE, 1)]


def test_a_refusal_comes_back_with_its_reason(api: FakeApi, relay: ReportRelay) -> None:
    api.refuse_with = 400
    with pytest.raises(CallbackError, match="refused: 400"):
        RelayClient(relay.path).report(update())


def test_a_relay_out_of_reach_is_a_report_not_delivered(tmp_path: Path) -> None:
    with pytest.raises(CallbackError, match="not relayed"):
        RelayClient(str(tmp_path / "none.sock")).report(update())


def test_a_closed_relay_takes_no_more_reports(api: FakeApi, relay: ReportRelay) -> None:
    client = RelayClient(relay.path)
    assert client.report(update()).applied
    relay.close()
    assert not os.path.exists(relay.path)
    with pytest.raises(CallbackError, match="not relayed"):
        client.report(update())
    with pytest.raises(CallbackError, match="not relayed"):
        RelayClient(relay.path).report(update())


def test_a_forked_process_cannot_close_the_relay(api: FakeApi, relay: ReportRelay) -> None:
    def close() -> str:
        relay.close()
        return "closed"

    assert outcome_of(in_child(close)) == "closed"
    assert os.path.exists(relay.path)
    assert RelayClient(relay.path).report(update()).applied


class Interrupted(Exception):
    pass


def test_a_wait_cut_short_never_takes_the_late_answer_for_the_next(
    api: FakeApi, relay: ReportRelay
) -> None:
    """A process interrupted while its report is on its way (a time limit) gets, for its
    next report, that report's answer, not the late one of the first."""
    first, second = update(IN_PROGRESS), update(DONE)
    api.slow[IN_PROGRESS] = 0.5

    def interrupted_then_again() -> str:
        def strike(_signum: int, _frame: FrameType | None) -> None:
            raise Interrupted

        signal.signal(signal.SIGALRM, strike)
        client = RelayClient(relay.path)
        signal.setitimer(signal.ITIMER_REAL, 0.1)
        try:
            client.report(first)
        except Interrupted:
            pass
        else:
            return "not interrupted"
        return client.report(second).model_dump_json()

    reply = CallbackReply.model_validate_json(outcome_of(in_child(interrupted_then_again)))
    assert reply.status is DONE and reply.applied
    assert [u.task_id for u in api.updates] == [first.task_id, second.task_id]


def test_what_is_not_a_report_is_refused(relay: ReportRelay) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(relay.path)
        payload = b'{"task_id": "x"}'
        sock.sendall(len(payload).to_bytes(4, "big") + payload)
        with sock.makefile("rb") as reader:
            length = int.from_bytes(reader.read(4), "big")
            answer = reader.read(length)
    assert answer.startswith(b"E") and b"malformed report" in answer


def _bodies(updates: list[StatusUpdate]) -> list[tuple[StatusUpdate, bytes]]:
    return [(u, u.model_dump_json().encode()) for u in updates]


def test_reports_together_go_in_as_few_requests_as_the_batch_limit_allows(api: FakeApi) -> None:
    client = CallbackClient(api.url, SECRET, max_wait=1.0, backoff=0.01, batching=True)
    reports = [update() for _ in range(MAX_REPORTS_PER_REQUEST + 7)]
    outcomes = client.report_together(_bodies(reports))
    assert api.request_sizes == [MAX_REPORTS_PER_REQUEST, 7]
    assert all(isinstance(o, CallbackReply) and o.applied for o in outcomes)
    assert [u.task_id for u in api.updates] == [u.task_id for u in reports]


def test_reports_together_to_an_api_without_batches_go_alone_each_with_its_outcome(
    api: FakeApi,
) -> None:
    api.takes_batches = False
    api.unknown.add("gone")
    client = CallbackClient(api.url, SECRET, max_wait=1.0, backoff=0.01, batching=True)
    outcomes = client.report_together(_bodies([update(), update(IN_PROGRESS, "gone"), update()]))
    assert api.request_sizes == [1, 1, 1]
    assert [isinstance(o, CallbackReply) and o.unknown for o in outcomes] == [False, True, False]
    api.refuse_with = 400
    two = [update(), update()]
    refused = client.report_together(_bodies(two))
    assert api.request_sizes[3:] == [1, 1]  # each sent, and refused, alone
    for one, outcome in zip(two, refused, strict=True):
        assert isinstance(outcome, CallbackError)
        assert f"task {one.task_id} refused: 400" in str(outcome)


def test_a_failure_of_the_relays_client_is_a_refusal_and_the_relay_goes_on(api: FakeApi) -> None:
    class Failing(CallbackClient):
        failures = 1

        def report_together(
            self, reports: Sequence[tuple[StatusUpdate, bytes]]
        ) -> list[CallbackReply | CallbackError]:
            if self.failures:
                self.failures -= 1
                raise RuntimeError("a bug")
            return super().report_together(reports)

    relay = ReportRelay(Failing(api.url, SECRET, max_wait=1.0, batching=True)).start()
    try:
        client = RelayClient(relay.path)
        with pytest.raises(CallbackError, match="relaying the report failed: RuntimeError: a bug"):
            client.report(update())
        assert client.report(update()).applied
    finally:
        relay.close()
