"""Workers die or are stopped while they run tasks (scenarios 1, 2, 3)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from tasklab_common.heartbeat import age

from .faultkit import Scenario, wait_until

#: What the chart's liveness probe allows (the file is touched every 10 s).
HEARTBEAT_MAX_AGE = 15

#: "A few hundred short tasks" that run in about ten seconds on two cores; every
#: sixth fails once first, so that retries are in flight when the worker dies.
MANY = 240
RETRY_EVERY = 6


@pytest.mark.scenario("1 kill -9 celery main")
def test_kill_celery_main_process_mid_run(scenario: Scenario) -> None:
    fx = scenario.fx
    redelivered = fx.queue_stat("celery", "redeliver")
    scenario.submit_many(
        [
            {"method": "celery", "duration": 0.02, "fail_times": int(i % RETRY_EVERY == 0)}
            for i in range(MANY)
        ],
        threads=8,
    )
    scenario.wait_counts(
        "a quarter of the tasks to be done", lambda c: c.get("DONE", 0) >= MANY // 4
    )
    scenario.fault("kill -9 celery main")
    fx.celery.kill(signal.SIGKILL)
    assert fx.celery.wait(10) == -signal.SIGKILL
    done_at_kill = scenario.counts().get("DONE", 0)
    assert done_at_kill < MANY, "the kill came after the last task: nothing was mid-run"
    scenario.note(f"killed with {done_at_kill}/{MANY} done")
    fx.celery.restart()
    verdict = scenario.check()
    wait_until(
        "the broker's redelivery count",
        lambda: fx.queue_stat("celery", "redeliver") > redelivered,
        10,
    )
    assert all(t.method == "celery" for t in verdict.tasks.values())


@pytest.mark.scenario("2 kill -9 pool child")
def test_kill_one_pool_child(scenario: Scenario) -> None:
    fx = scenario.fx
    tasks = scenario.submit_many([{"method": "celery", "duration": 1.5}] * 6)
    ids = [t["id"] for t in tasks]
    scenario.wait_counts("three tasks running", lambda c: c.get("IN_PROGRESS", 0) >= 3)
    children = fx.celery.children_pids()
    assert len(children) == 3, children
    scenario.fault(f"kill -9 pool child {children[0]}")
    os.kill(children[0], signal.SIGKILL)
    verdict = scenario.check()
    # The task that child ran was redelivered and ran again; the pool replaced it.
    assert verdict.row.duplicates >= 1, verdict.executions
    assert max(verdict.tasks[i].deliveries for i in ids) >= 2
    assert fx.celery.running()
    wait_until("a new pool child", lambda: len(fx.celery.children_pids()) == 3, 10)
    assert children[0] not in fx.celery.children_pids()


@pytest.mark.scenario("3 SIGTERM workers (warm)")
def test_sigterm_lets_running_tasks_finish(scenario: Scenario, tmp_path: Path) -> None:
    """A warm shutdown: running tasks finish and are acked; the rest waits in the queue.
    Meanwhile the Celery worker's liveness heartbeat stays fresh (a probe must not kill the
    tasks a warm shutdown waits for)."""
    fx = scenario.fx
    beat = tmp_path / "celery.heartbeat"
    fx.celery.env["HEARTBEAT_FILE"] = str(beat)
    fx.celery.restart()
    # The Celery tasks first (the restarted worker may take a while to consume), then the
    # consumer's, so that all six run at once however long the restart took.
    running = scenario.submit_many([{"method": "celery", "duration": 6}] * 3)
    scenario.wait_counts("three Celery tasks running", lambda c: c.get("IN_PROGRESS", 0) >= 3)
    running += scenario.submit_many([{"method": "rabbitmq", "duration": 4}] * 3)
    scenario.wait_counts("six tasks running", lambda c: c.get("IN_PROGRESS", 0) >= 6)
    queued = scenario.submit_many(
        [{"method": "celery", "duration": 0}] * 3 + [{"method": "rabbitmq", "duration": 0}] * 3
    )
    for proc in (fx.celery, fx.consumer):
        proc.kill(signal.SIGTERM)  # the main process only, as a container runtime does
    stale: list[str] = []
    deadline = time.monotonic() + 30
    while fx.celery.running() and time.monotonic() < deadline:
        if not beat.exists():
            stale.append("missing")
        elif age(beat) > HEARTBEAT_MAX_AGE:
            stale.append("stale")
        time.sleep(0.2)
    fx.celery.env.pop("HEARTBEAT_FILE", None)
    for proc in (fx.celery, fx.consumer):
        assert proc.wait(30) == 0, f"{proc.name} did not exit cleanly:\n{proc.log_tail()}"
    assert not stale, f"celery heartbeat lost during the warm shutdown: {sorted(set(stale))}"
    counts = scenario.counts([t["id"] for t in running])
    assert counts == {"DONE": 6}, counts
    assert scenario.counts([t["id"] for t in queued]).get("DONE", 0) == 0
    scenario.note("the 6 running tasks ended DONE before the workers exited (code 0)")
    for proc in (fx.celery, fx.consumer):
        proc.restart()
    scenario.check(max_duplicates=0)


def _four_running(scenario: Scenario, env: dict[str, str], duration: float) -> list[str]:
    """Both workers restarted with ``env``; two Celery and two direct tasks of
    ``duration`` s submitted and running: their ids."""
    fx = scenario.fx
    for proc in (fx.celery, fx.consumer):
        proc.env.update(env)
        proc.restart()
    running = scenario.submit_many(
        [{"method": "celery", "duration": duration}] * 2
        + [{"method": "rabbitmq", "duration": duration}] * 2
    )
    scenario.wait_counts("four tasks running", lambda c: c.get("IN_PROGRESS", 0) >= 4)
    return [t["id"] for t in running]


@pytest.mark.scenario("3b SIGTERM, tasks longer than the grace: hand-back")
def test_sigterm_hands_back_tasks_longer_than_the_grace(scenario: Scenario) -> None:
    """A stopping worker whose tasks outlast its grace (HAND_BACK_AFTER) hands them back
    before it exits: each is reported RETRYING and requeued, and runs again on the
    restarted worker as attempt 2, ending DONE: never FAILED, never lost, and attempt 1
    ran once."""
    fx = scenario.fx
    ids = _four_running(scenario, {"HAND_BACK_AFTER": "1"}, 20)
    began = time.monotonic()
    for proc in (fx.celery, fx.consumer):
        proc.kill(signal.SIGTERM)  # the main process only, as a container runtime does
    for proc in (fx.celery, fx.consumer):
        assert proc.wait(30) == 0, f"{proc.name} did not exit cleanly:\n{proc.log_tail()}"
    stopped = time.monotonic() - began
    # Both exited well before their tasks of 20 s could have ended: handed back.
    assert scenario.counts(ids) == {"RETRYING": 4}, scenario.counts(ids)
    for proc in (fx.celery, fx.consumer):
        assert "handed back" in proc.log_text(), proc.log_tail()
        proc.env.pop("HAND_BACK_AFTER", None)
        proc.restart()
    wait_until("the four DONE", lambda: scenario.counts(ids) == {"DONE": 4}, 90)
    tasks = fx.audit().tasks(after_num=2**62, ids=ids)
    assert sorted(t.attempts for t in tasks.values()) == [2, 2, 2, 2], tasks
    scenario.note(
        f"4 tasks of 20 s handed back, workers out {stopped:.1f} s after SIGTERM; DONE as attempt 2"
    )
    scenario.check(max_duplicates=0)


@pytest.mark.scenario("3c SIGTERM with the api gone too (helm uninstall)")
def test_sigterm_with_the_api_gone_gives_unreported_tasks_back(scenario: Scenario) -> None:
    """The api and the workers stop together while tasks run (``helm uninstall``): a
    task ends but its DONE cannot be reported. A stopping worker retries the report
    ``CALLBACK_STOPPING_WAIT`` seconds, not ``CALLBACK_MAX_WAIT``, and exits with the
    message back in the broker; once the api and the workers are back, the task runs
    again and ends DONE."""
    fx = scenario.fx
    # (10 s: the four must run at once, and the restarted Celery worker may be ready a
    # few seconds after the consumer)
    ids = _four_running(scenario, {"CALLBACK_STOPPING_WAIT": "2"}, 10)
    scenario.fault("api stopped, then SIGTERM to both workers")
    fx.api.terminate()
    began = time.monotonic()
    for proc in (fx.celery, fx.consumer):
        proc.kill(signal.SIGTERM)
    for proc in (fx.celery, fx.consumer):
        # (CALLBACK_MAX_WAIT is 120 s here: an exit within 30 s is the stopping wait's)
        assert proc.wait(30) == 0, f"{proc.name} did not exit in 30 s:\n{proc.log_tail()}"
        assert "(the worker is stopping)" in proc.log_text(), proc.log_tail()
    stopped = time.monotonic() - began
    assert scenario.counts(ids) == {"IN_PROGRESS": 4}, scenario.counts(ids)
    wait_until(
        "the four messages back in the broker",
        lambda: sum(ready for ready, _ in fx.queue_counts().values()) == 4,
        20,
    )
    for proc in (fx.celery, fx.consumer):
        proc.env.pop("CALLBACK_STOPPING_WAIT", None)
    fx.ensure_running()
    wait_until("the four DONE", lambda: scenario.counts(ids) == {"DONE": 4}, 90)
    scenario.note(f"workers out {stopped:.1f} s after SIGTERM with the api gone; 4 DONE after")
    scenario.check()


@pytest.mark.scenario("3d SIGTERM, the stop hangs after the last task")
def test_a_stop_that_hangs_after_the_last_task_ends_within_the_linger(
    scenario: Scenario,
) -> None:
    """A warm shutdown waits for the running task, however long; once none runs, a
    worker that does not exit (seen on a cluster with its broker and api uninstalled
    with it: silent until its 65-min grace) exits ``STOP_LINGER`` seconds later, with
    where each thread waited in its log. The hang is injected after Celery's own stop."""
    fx = scenario.fx
    fx.celery.env.update({"TASKLAB_FAULT_HANG_ON_STOP": "1", "STOP_LINGER": "2"})
    fx.celery.restart()
    task = scenario.submit_ok(method="celery", duration=4)
    wait_until("the task running", lambda: scenario.counts([task["id"]]) == {"IN_PROGRESS": 1}, 30)
    scenario.fault("SIGTERM to the Celery worker, its stop hanging")
    began = time.monotonic()
    fx.celery.kill(signal.SIGTERM)
    try:
        # The task (4 s) ends DONE first; the worker is out 2 s after (30 s: no grace).
        assert fx.celery.wait(30) == 0, f"the worker did not exit:\n{fx.celery.log_tail()}"
    finally:
        for name in ("TASKLAB_FAULT_HANG_ON_STOP", "STOP_LINGER"):
            fx.celery.env.pop(name, None)
    stopped = time.monotonic() - began
    assert scenario.counts([task["id"]]) == {"DONE": 1}, scenario.counts([task["id"]])
    log = fx.celery.log_text()
    assert "still stopping 2 s after the last task ended" in log, fx.celery.log_tail()
    assert "_hang_when_asked" in log, fx.celery.log_tail()  # where it waited
    fx.celery.restart()
    scenario.note(f"the task DONE, then the hanging worker out {stopped:.1f} s after SIGTERM")
    scenario.check(max_duplicates=0)
