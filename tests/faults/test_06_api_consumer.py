"""The api and the consumer die (scenarios 6, 7) and a long consumer task (8)."""

from __future__ import annotations

import signal
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tasklab_api.publisher import HEARTBEAT
from tasklab_common.messages import StatusUpdate
from tasklab_common.models import TaskStatus
from tasklab_common.signing import sign_headers

from .faultkit import FaultStack, Scenario, wait_until

CALLBACK = "/update_task_status_api/"


def signed_request(fx: FaultStack, update: StatusUpdate) -> tuple[bytes, dict[str, str]]:
    body = update.model_dump_json().encode()
    return body, {"Content-Type": "application/json", **sign_headers(fx.secret, body)}


@pytest.mark.scenario("6 kill -9 api mid-run")
def test_kill_api_while_tasks_run(scenario: Scenario) -> None:
    fx = scenario.fx
    # An authentic report that changes nothing (the task is over), to replay later.
    probe = scenario.submit_ok(method="celery", duration=0)
    wait_until("the probe task", lambda: scenario.counts([probe["id"]]) == {"DONE": 1}, 30)
    body, headers = signed_request(
        fx, StatusUpdate(task_id=probe["id"], status=TaskStatus.IN_PROGRESS, worker="probe")
    )
    first = scenario.http.post(CALLBACK, content=body, headers=headers)
    assert first.status_code == 200 and first.json()["applied"] is False, first.text

    tasks = scenario.submit_many(
        [{"method": m, "duration": 1.0} for m in ("celery", "rabbitmq") for _ in range(6)]
    )
    scenario.wait_counts("tasks running", lambda c: c.get("IN_PROGRESS", 0) >= 4)
    logs_before = {p.name: len(p.log_text()) for p in (fx.celery, fx.consumer)}
    scenario.fault("kill -9 api")
    fx.api.kill(signal.SIGKILL)
    assert fx.api.wait(10) == -signal.SIGKILL
    # The workers finish what they run and retry their reports until the api is back.
    wait_until(
        "both workers retrying their reports",
        lambda: all(
            "retrying in" in p.log_text()[logs_before[p.name] :] for p in (fx.celery, fx.consumer)
        ),
        20,
    )
    scenario.note("the workers retried their reports until the api was back")
    fx.api.restart()
    fx.wait_ready()
    scenario.reset_http()  # its keep-alive connection went with the old api
    verdict = scenario.check(max_duplicates=0)
    assert all(verdict.tasks[t["id"]].status == "DONE" for t in tasks)
    # The nonce store outlives the process: the old request is still a replay.
    replay = scenario.http.post(CALLBACK, content=body, headers=headers)
    assert replay.status_code == 403, replay.text


@pytest.mark.scenario("6b SIGTERM api: sync wait, live stream")
def test_sigterm_api_ends_live_streams_and_sync_waits(scenario: Scenario) -> None:
    """A stopping api ends its live streams cleanly and answers a waiting sync request
    504 with its task at once, instead of holding both until its grace period ends;
    the task runs on and ends DONE once an api takes its report again."""
    fx = scenario.fx
    stream_end: dict[str, object] = {}

    def follow_stream() -> None:
        began = time.monotonic()
        try:
            with (
                httpx.Client(base_url=fx.base_url, timeout=60) as client,
                client.stream("GET", "/api/events") as resp,
            ):
                for _ in resp.iter_lines():
                    pass
            stream_end["clean"] = True
        except httpx.HTTPError as exc:
            stream_end["error"] = f"{type(exc).__name__}: {exc}"
        stream_end["after"] = time.monotonic() - began

    with ThreadPoolExecutor(2) as pool:
        streaming = pool.submit(follow_stream)
        waiting = pool.submit(scenario.submit, "DONE", method="sync", duration=3)
        try:
            # Not accepted yet (its answer is what is awaited): found in the store.
            wait_until(
                "the sync task running",
                lambda: any(
                    t.status == "IN_PROGRESS"
                    for t in fx.audit().tasks(after_num=scenario.watermark).values()
                ),
                30,
            )
        finally:
            began = time.monotonic()
            fx.api.kill(signal.SIGTERM)  # also ends the stream if the wait failed
            code = fx.api.wait(30)
            stopped = time.monotonic() - began
        answer = waiting.result(10)
        streaming.result(10)
    assert code in (0, -signal.SIGTERM), code
    assert stopped < 5, f"the api took {stopped:.1f} s to stop"
    assert answer.status_code == 504, answer.text
    assert answer.json()["status"] == "IN_PROGRESS"
    assert stream_end.get("clean"), stream_end
    scenario.note(f"api stopped {stopped:.1f}s after SIGTERM; sync answered 504, stream closed")
    fx.api.restart()
    fx.wait_ready()
    scenario.reset_http()
    verdict = scenario.check(max_duplicates=0)
    assert verdict.tasks[answer.json()["id"]].status == "DONE"


@pytest.mark.scenario("7 kill -9 consumer mid-task")
def test_kill_consumer_mid_task(scenario: Scenario) -> None:
    """The deliveries a dead consumer held come back: a task it was running runs again
    (the same attempt, at-least-once); a task it held between a failed attempt and its
    retry resumes as that next attempt, not as a rerun of the failed one."""
    fx = scenario.fx
    tasks = scenario.submit_many(
        [{"method": "rabbitmq", "duration": 1.5, "fail_times": int(i < 2)} for i in range(6)]
    )
    ids = [t["id"] for t in tasks]
    scenario.wait_counts(
        "three tasks running", lambda c: c.get("IN_PROGRESS", 0) + c.get("RETRYING", 0) >= 3
    )
    scenario.fault("kill -9 consumer")
    fx.consumer.kill(signal.SIGKILL)
    assert fx.consumer.wait(10) == -signal.SIGKILL
    held = fx.audit().tasks(after_num=2**62, ids=ids)
    running = {i for i, t in held.items() if t.status == "IN_PROGRESS"}
    backing_off = {i for i, t in held.items() if t.status == "RETRYING"}
    assert len(running | backing_off) >= 3, held
    fx.consumer.restart()
    verdict = scenario.check()
    assert all(verdict.tasks[i].status == "DONE" for i in ids)
    for i in running:
        assert verdict.executions[i] == 2, (i, verdict.executions)
        assert verdict.tasks[i].deliveries >= 2
    for i in backing_off:
        assert verdict.executions[i] == 1, (i, verdict.executions)
        assert verdict.tasks[i].attempts == 2, verdict.tasks[i]
    scenario.note(
        f"{len(running)} running tasks ran again, {len(backing_off)} waiting to retry "
        "resumed as their next attempt"
    )


def consumer_connection(fx: FaultStack) -> dict[str, object] | None:
    resp = fx.node.api("GET", "api/connections")
    resp.raise_for_status()
    for conn in resp.json():
        props = conn.get("client_properties", {})
        if props.get("connection_name") == fx.stack.cfg.extra_env["CONSUMER_NAME"]:
            found: dict[str, object] = conn
            return found
    return None


@pytest.mark.scenario("8 long task, 1s heartbeat")
def test_long_consumer_task_keeps_its_connection(scenario: Scenario) -> None:
    """A task six heartbeat intervals long: the I/O thread keeps the connection alive."""
    fx = scenario.fx
    heartbeat = 1
    fx.consumer.env["CONSUMER_HEARTBEAT"] = str(heartbeat)
    try:
        fx.consumer.restart()
        log_start = len(fx.consumer.log_text())
        wait_until("the consumer's connection", lambda: consumer_connection(fx) is not None, 20)
        before = consumer_connection(fx)
        assert before is not None and before["timeout"] == heartbeat, before
        task = scenario.submit_ok(method="rabbitmq", duration=6 * heartbeat)
        scenario.note(f"a {6 * heartbeat}s task on a {heartbeat}s AMQP heartbeat")
        verdict = scenario.check(max_duplicates=0)
        assert verdict.tasks[task["id"]].deliveries == 1
        after = consumer_connection(fx)
        assert after is not None
        assert (after["name"], after["connected_at"]) == (before["name"], before["connected_at"])
        log = fx.consumer.log_text()[log_start:]
        assert "connection lost" not in log, log[-2000:]
    finally:
        fx.consumer.env.pop("CONSUMER_HEARTBEAT", None)
        fx.consumer.restart()


def test_api_connection_has_a_short_heartbeat(fault_stack: FaultStack) -> None:
    """The api notices a hung broker through its AMQP heartbeat (and turns unready)."""
    fault_stack.ensure_running()

    def api_timeouts() -> dict[str, int]:
        resp = fault_stack.node.api("GET", "api/connections")
        resp.raise_for_status()
        found = {}
        for conn in resp.json():
            name = str(conn.get("client_properties", {}).get("connection_name", ""))
            if name.startswith("tasklab-api"):
                found[name] = int(conn["timeout"])
        return found

    # The management API lists a connection once its statistics come in.
    wait_until("the api's broker connection listed", lambda: bool(api_timeouts()), 20)
    assert set(api_timeouts().values()) == {HEARTBEAT}, api_timeouts()
