"""The Celery beat's housekeeping (scenario 14), with the real beat, worker and api.

A worker takes a task, reports it IN_PROGRESS, acknowledges its message and vanishes:
nothing will ever report on the task again, and no message is left to redeliver.
Two other tasks' messages (one per queue) are purged before any worker took them.
The beat's periodic housekeeping task asks the api to mark such tasks FAILED once
they are silent for their duration plus ``STUCK_GRACE_SECONDS``, and to purge final
tasks older than ``HISTORY_RETENTION_DAYS``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import httpx
import pika
import pytest

from tasklab_api.store import GAVE_UP, NEVER_DELIVERED
from tasklab_common.messages import StatusUpdate, TaskMessage
from tasklab_common.models import TaskStatus
from tasklab_common.queues import CELERY_QUEUE, DIRECT_QUEUE
from tasklab_common.signing import sign_headers
from tasklab_devtools.stack import beat_process

from .faultkit import FaultStack, Scenario, wait_until

GRACE_SECONDS = 2
RETENTION_SECONDS = 20


def vanish_with_next_message(fx: FaultStack) -> TaskMessage:
    """Be a worker that takes one direct-queue message, starts it, acks it and dies."""
    params = pika.URLParameters(fx.node.amqp_url)
    with pika.BlockingConnection(params) as conn:
        channel = conn.channel()
        method, _, body = channel.basic_get(DIRECT_QUEUE)
        assert method is not None and body is not None, "no message on the direct queue"
        assert method.delivery_tag is not None
        msg = TaskMessage.model_validate_json(body)
        update = StatusUpdate(task_id=msg.task_id, status=TaskStatus.IN_PROGRESS, worker="ghost")
        raw = update.model_dump_json().encode()
        headers = {"Content-Type": "application/json", **sign_headers(fx.secret, raw)}
        resp = httpx.post(f"{fx.base_url}/update_task_status_api/", content=raw, headers=headers)
        assert resp.status_code == 200 and resp.json()["proceed"], resp.text
        channel.basic_ack(method.delivery_tag)
    return msg


@pytest.mark.scenario("14 beat housekeeping")
def test_beat_fails_stuck_tasks_and_purges_history(scenario: Scenario, tmp_path: Path) -> None:
    fx = scenario.fx
    # History to purge: what earlier scenarios left, and a few tasks run to their end
    # before this scenario's own (its watermark is moved past them).
    earlier = [
        scenario.http.post("/api/tasks", json={"method": m, "duration": 0}).json()["id"]
        for m in ("celery", "rabbitmq", "sync")
    ]
    wait_until(
        "the earlier tasks",
        lambda: fx.audit().status_counts(earlier) == {"DONE": len(earlier)},
        30,
    )
    scenario.begin_after_setup()
    old = {t.id for t in fx.audit().tasks().values() if t.finished_at is not None}
    # The retention comes second (an api restarted with it), once the scenario's own
    # tasks are checked: from the first, a slow machine could purge them before that.
    api_env = {"STUCK_GRACE_SECONDS": str(GRACE_SECONDS)}
    retention = {"HISTORY_RETENTION_DAYS": repr(RETENTION_SECONDS / 86400)}
    cfg = dataclasses.replace(fx.stack.cfg, beat_schedule=tmp_path / "celerybeat-schedule")
    beat = beat_process(cfg)
    beat.env["HOUSEKEEPING_INTERVAL"] = "1"
    fx.api.env.update(api_env)
    try:
        fx.api.restart()
        fx.wait_ready()
        scenario.reset_http()
        # The consumer is stopped so that the ghost worker gets the message.
        assert fx.consumer.terminate(30) == 0
        ghost = scenario.submit_ok("FAILED", method="rabbitmq", duration=0.5)
        healthy = scenario.submit_many([{"method": "celery", "duration": 0.2}] * 4)
        scenario.fault("a worker started a task, acked it and vanished")
        assert vanish_with_next_message(fx).task_id == ghost["id"]
        # Messages purged from both queues while no worker reads them (once the healthy
        # tasks are done: their messages must not be purged with them).
        wait_until(
            "the healthy tasks",
            lambda: scenario.counts([t["id"] for t in healthy]) == {"DONE": len(healthy)},
            30,
        )
        assert fx.celery.terminate(60) == 0
        purged = [
            scenario.submit_ok("FAILED", method=m, duration=0) for m in ("rabbitmq", "celery")
        ]
        fx.node.purge(DIRECT_QUEUE)
        fx.node.purge(CELERY_QUEUE)
        scenario.fault("two tasks' messages were purged from their queues")
        fx.celery.restart()
        fx.consumer.restart()
        fx.stack.add(beat)
        beat.start()

        watched = [ghost["id"], *(t["id"] for t in purged)]
        # (90 s: the beat and the restarted worker start first, each taking 10-20 s on a
        # machine loaded by the cluster's builds; then a run every second)
        wait_until(
            "housekeeping to fail the abandoned and the purged tasks",
            lambda: scenario.counts(watched) == {"FAILED": 3},
            90,
            interval=0.5,
            detail=lambda: (
                f"statuses {scenario.counts(watched)}; beat running: {beat.running()}; "
                f"worker running: {fx.celery.running()}"
            ),
        )
        verdict = scenario.check()
        row = verdict.tasks[ghost["id"]]
        assert (row.error or "").startswith(f"{GAVE_UP} no report"), row.error
        for task, queue in zip(purged, (DIRECT_QUEUE, CELERY_QUEUE), strict=True):
            row = verdict.tasks[task["id"]]
            assert (row.error or "").startswith(NEVER_DELIVERED), row.error
            assert f"queue {queue} stayed empty" in (row.error or "")
        assert all(verdict.tasks[t["id"]].status == "DONE" for t in healthy)
        scenario.note(f"grace {GRACE_SECONDS}s, retention {RETENTION_SECONDS}s, beat every 1s")
        metrics = scenario.http.get("/metrics").text
        assert 'tasklab_housekeeping_tasks_total{action="failed_stuck"} 1.0' in metrics
        assert 'tasklab_housekeeping_tasks_total{action="failed_orphaned"} 2.0' in metrics

        # Tasks of the earlier scenarios are older than the retention: purged, and
        # their reports with them.
        fx.api.env.update(retention)
        fx.api.restart()
        fx.wait_ready()
        scenario.reset_http()
        wait_until(
            "old tasks purged",
            lambda: not (old & set(fx.audit().tasks())),
            RETENTION_SECONDS + 30,
        )
        gone = next(iter(old))
        assert scenario.http.get(f"/api/tasks/{gone}").status_code == 404
        assert not {e.task_id for e in fx.audit().events(0)} & old
        assert "Sending due task housekeeping" in beat.log_text()
    finally:
        beat.terminate(15)
        fx.stack.processes.pop(beat.name, None)
        for key in (*api_env, *retention):
            fx.api.env.pop(key, None)
        fx.api.restart()
        fx.wait_ready()
