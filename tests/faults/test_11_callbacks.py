"""Forged, replayed, stale and wrong-task callbacks (scenario 11)."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest

from tasklab_common.messages import StatusUpdate
from tasklab_common.models import TaskStatus
from tasklab_common.signing import sign_headers

from .faultkit import Scenario, wait_until

CALLBACK = "/update_task_status_api/"


def state_of(scenario: Scenario, task_id: str) -> dict[str, Any]:
    task: dict[str, Any] = scenario.http.get(f"/api/tasks/{task_id}").json()
    return {k: task[k] for k in ("status", "attempts", "result", "error", "worker", "finished_at")}


@pytest.mark.scenario("11 hostile callbacks")
def test_hostile_callbacks_change_nothing(scenario: Scenario) -> None:
    fx = scenario.fx
    running = scenario.submit_ok(method="celery", duration=4)
    done = scenario.submit_ok(method="rabbitmq", duration=0)
    wait_until(
        "one task running, one done",
        lambda: scenario.counts() == {"IN_PROGRESS": 1, "DONE": 1},
        30,
        detail=scenario.counts,
    )
    victims = {t["id"]: state_of(scenario, t["id"]) for t in (running, done)}
    events_before = fx.audit().max_event()

    def post(body: bytes, headers: dict[str, str]) -> int:
        resp = scenario.http.post(
            CALLBACK, content=body, headers={"Content-Type": "application/json", **headers}
        )
        assert resp.status_code < 500, resp.text
        if resp.status_code >= 400:
            assert resp.json()["detail"], resp.text  # a reason
        return resp.status_code

    def update(task_id: str, status: TaskStatus, **kw: Any) -> bytes:
        return StatusUpdate(task_id=task_id, status=status, **kw).model_dump_json().encode()

    rejected = []
    for task_id in victims:
        finish = update(task_id, TaskStatus.DONE, attempt=9, result={"forged": True})
        fail = update(task_id, TaskStatus.FAILED, attempt=9, error="forged")
        now = time.time()
        attempts = {
            "unsigned": (finish, {}),
            "wrong secret": (finish, sign_headers("not-the-secret-" * 3, finish)),
            "tampered body": (fail, sign_headers(fx.secret, finish)),
            "stale": (finish, sign_headers(fx.secret, finish, now=now - 3600)),
            "from the future": (finish, sign_headers(fx.secret, finish, now=now + 3600)),
            "bad nonce": (
                finish,
                {**sign_headers(fx.secret, finish), "X-Tasklab-Nonce": "../../etc"},
            ),
            "empty signature": (
                finish,
                {**sign_headers(fx.secret, finish), "X-Tasklab-Signature": ""},
            ),
        }
        for name, (body, headers) in attempts.items():
            code = post(body, headers)
            rejected.append((name, code))
            assert code == 401, (name, code)
    # Wrong task: an authentic report for a task that does not exist.
    ghost = update(str(uuid.uuid4()), TaskStatus.DONE, result={"x": 1})
    assert post(ghost, sign_headers(fx.secret, ghost)) == 404
    # Replayed: an authentic report that changes nothing (the task is over), then again.
    late = update(done["id"], TaskStatus.FAILED, attempt=1, error="late")
    signed = sign_headers(fx.secret, late)
    assert post(late, signed) == 200
    assert post(late, signed) == 403
    # The replayed headers on another body are no signature at all.
    assert post(late.replace(b"late", b"evil"), signed) == 401
    # A late report of an earlier phase after the task is over changes nothing.
    again = update(done["id"], TaskStatus.RETRYING, attempt=1, error="late retry")
    assert post(again, sign_headers(fx.secret, again)) == 200

    scenario.note(f"{len(rejected) + 5} hostile reports, none applied")
    # The finished task is exactly as it was; the running one ends as its worker says.
    assert state_of(scenario, done["id"]) == victims[done["id"]]
    verdict = scenario.check()
    real = state_of(scenario, running["id"])
    assert (real["status"], real["attempts"], real["error"]) == ("DONE", 1, None), real
    assert real["result"]["status"] == "success", real
    ours = [e for e in fx.audit().events(events_before) if e.worker is None]
    assert ours and all(e.task_id == done["id"] and not e.applied for e in ours), ours
    assert verdict.executions[running["id"]] == 1
