"""A poison task that kills its worker every time it runs (scenario 9).

The task's ``duration`` is the fault-injection value (``FAULT_ENV``): whichever
process runs it dies (SIGKILL). Each death returns the message to the queue; the api
counts the starts of the attempt, and past ``DELIVERY_LIMIT`` it marks the task
FAILED and tells the worker to dead-letter the message: no endless redelivery loop,
and the message is kept in ``dead_letters`` for inspection.

Healthy tasks must not pay for it. Two direct-queue tasks are already running in the
consumer when the poison arrives there: the crash kills them too, and all three come
back redelivered. The consumer runs redelivered messages one at a time, so the poison
kills nobody else on its later deliveries and the two healthy tasks end DONE (run
side by side again, they would each be started ``DELIVERY_LIMIT`` times with it and
given up on as well).
"""

from __future__ import annotations

import time

import pytest

from tasklab_api.store import GAVE_UP
from tasklab_common.queues import DEAD_LETTER_QUEUE

from .conftest import FAULT_ENV
from .faultkit import FaultStack, Scenario

POISON = float(FAULT_ENV["TASKLAB_FAULT_CRASH_ON_DURATION"])
LIMIT = int(FAULT_ENV["DELIVERY_LIMIT"])
#: What the Celery worker logs when one of its pool processes is killed.
POOL_CHILD_KILLED = "exited with 'signal 9 (SIGKILL)'"


def dead_letters(fx: FaultStack) -> int:
    return fx.node.queue_counts(DEAD_LETTER_QUEUE)[0]


@pytest.mark.scenario("9 poison task, delivery limit")
def test_poison_task_stops_at_the_delivery_limit(scenario: Scenario) -> None:
    fx = scenario.fx
    dead_before = dead_letters(fx)
    celery_log_start = len(fx.celery.log_text())
    bystanders = scenario.submit_many([{"method": "rabbitmq", "duration": 1.5}] * 2)
    # The bystanders are the scenario's only tasks so far.
    scenario.wait_counts("the bystanders to run", lambda c: c.get("IN_PROGRESS", 0) == 2)
    poison = [
        scenario.submit_ok("FAILED", method=method, duration=POISON)
        for method in ("celery", "rabbitmq")
    ]
    healthy = scenario.submit_many(
        [{"method": m, "duration": 0.2} for m in ("celery", "rabbitmq") for _ in range(4)]
    )
    ids = [t["id"] for t in poison]

    # Watch the deaths as they happen: each is a fault that hit whatever ran then. The
    # consumer is one process, so it is restarted as Kubernetes would restart its pod;
    # the Celery worker replaces its pool processes itself.
    pool_deaths = 0
    deadline = time.monotonic() + 90
    while sum(scenario.counts(ids).get(s, 0) for s in ("FAILED", "DONE")) < len(ids):
        assert time.monotonic() < deadline, f"poison tasks not final: {scenario.counts(ids)}"
        seen = fx.celery.log_text()[celery_log_start:].count(POOL_CHILD_KILLED)
        for _ in range(seen - pool_deaths):
            scenario.fault("poison killed a celery pool process")
        pool_deaths = seen
        if not fx.consumer.running():
            scenario.fault("poison killed the consumer")
            fx.consumer.restart()
        time.sleep(0.1)
    if not fx.consumer.running():
        fx.consumer.restart()
    scenario.note(f"DELIVERY_LIMIT={LIMIT}; {len(scenario.faults)} worker deaths")

    verdict = scenario.check()
    for task in poison:
        row = verdict.tasks[task["id"]]
        assert row.status == "FAILED" and (row.error or "").startswith(GAVE_UP), row
        # Run exactly LIMIT times; the start after that was refused, not run.
        assert verdict.executions[task["id"]] == LIMIT, verdict.executions[task["id"]]
        assert row.deliveries == LIMIT + 1, row
    assert all(verdict.tasks[t["id"]].status == "DONE" for t in healthy + bystanders)
    # The first crash killed the bystanders' runs; none of the later ones did.
    assert [verdict.executions[t["id"]] for t in bystanders] == [2, 2], [
        (verdict.tasks[t["id"]].deliveries, verdict.executions[t["id"]]) for t in bystanders
    ]
    # Both messages were dead-lettered (not acknowledged away, not requeued forever).
    fx.node.wait_queue_counts(DEAD_LETTER_QUEUE, dead_before + 2, 0, timeout=30)
    # No loop: nothing runs them again.
    time.sleep(2)
    again = fx.audit().tasks(after_num=2**62, ids=ids)
    assert [again[i].deliveries for i in ids] == [LIMIT + 1] * 2
    fx.node.purge(DEAD_LETTER_QUEUE)
