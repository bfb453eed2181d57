"""Bad input and forged callbacks: refused with a reason, nothing published or changed."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
from e2eclient import Target

from tasklab_common.messages import StatusUpdate
from tasklab_common.models import TaskStatus
from tasklab_common.queues import DIRECT_QUEUE
from tasklab_common.signing import sign_headers

BAD_BODIES: list[Any] = [
    {"method": "celery", "duration": -1},
    {"method": "celery", "duration": "5"},
    {"method": "rabbitmq", "duration": True},
    {"method": "rabbitmq", "duration": 1e12},
    {"method": "sync", "kind": "process_data"},
    {"method": "celery", "kind": "process_data", "numbers": []},
    {"method": "teleport", "duration": 1},
    {"method": "celery", "fail_times": -2},
    {"method": "rabbitmq", "extra": "field"},
    "just a string",
]


def _published(target: Target) -> int:
    """Messages published into the direct queue (the broker's per-queue statistics).

    Only the api publishes there (the consumer retries within its delivery); the
    Celery queue also gets the beat's housekeeping task and Celery's retries, at times
    no test controls. The api validates a submission before it looks at its method, so
    what holds for this queue holds for both."""
    assert target.broker is not None
    resp = target.broker.api("GET", f"api/queues/%2F/{DIRECT_QUEUE}")
    resp.raise_for_status()
    return int(resp.json().get("message_stats", {}).get("publish", 0))


def _settled_published(target: Target) -> int:
    """:func:`_published` once it counts every direct task the api holds (each was
    published once: the consumer retries in place) and then holds still. The broker's
    statistics lag a second or more behind, longer under load, so holding still alone
    could be a count still missing the last publishes."""
    accepted = int(
        target.http.get("/api/tasks", params={"method": "rabbitmq", "limit": 1}).json()["total"]
    )
    deadline = time.monotonic() + 30
    while _published(target) < accepted:
        assert time.monotonic() < deadline, "the broker never counted the direct tasks"
        time.sleep(0.5)
    last = _published(target)
    for _ in range(20):
        time.sleep(1.5)
        now = _published(target)
        if now == last:
            return now
        last = now
    raise AssertionError("the task queues' publish count kept moving")


def test_invalid_input_is_422_and_nothing_is_published(target: Target) -> None:
    if target.broker is None:
        pytest.skip("needs the broker's metrics")
    before_total = target.total()
    # Earlier tests' retries publish again after their back-off: let them all end first.
    deadline = time.monotonic() + 120
    busy: dict[str, list[str] | int] = {
        "status": ["PENDING", "IN_PROGRESS", "RETRYING"],
        "limit": 1,
    }
    while target.http.get("/api/tasks", params=busy).json()["total"]:
        assert time.monotonic() < deadline, "earlier tasks never ended"
        time.sleep(0.5)
    before = _settled_published(target)
    # Each bad body also as a RabbitMQ-direct one (the queue the check below counts).
    as_direct = [
        {**b, "method": "rabbitmq"}
        for b in BAD_BODIES
        if isinstance(b, dict) and b.get("method") in ("celery", "sync")
    ]
    for body in BAD_BODIES + [b for b in as_direct if b not in BAD_BODIES]:
        resp = target.http.post("/api/tasks", json=body)
        assert resp.status_code == 422, (body, resp.text)
        assert resp.json()["detail"], body
    for raw in (
        b'{"method": "celery", "duration": NaN}',
        b'{"method": "celery", "duration": 1e999}',
    ):
        resp = target.http.post(
            "/api/tasks", content=raw, headers={"Content-Type": "application/json"}
        )
        assert resp.status_code == 422, raw
    resp = target.http.post(
        "/api/tasks", content=b"x" * 2_000_000, headers={"Content-Type": "application/json"}
    )
    assert resp.status_code == 413
    resp = target.http.post(
        "/api/tasks", content=b"method=celery", headers={"Content-Type": "text/plain"}
    )
    assert resp.status_code == 415
    assert target.total() == before_total
    assert _settled_published(target) == before
    # The counter does count: one valid task is one more message.
    target.wait_status(target.submit_ok(method="rabbitmq", duration=0)["id"])
    deadline = time.monotonic() + 20
    while (now := _published(target)) != before + 1 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert now == before + 1


def _post_callback(target: Target, body: bytes, headers: dict[str, str]) -> httpx.Response:
    return target.post_signed_route("/update_task_status_api/", body, headers)


def test_forged_and_replayed_callbacks_change_nothing(target: Target) -> None:
    task = target.submit_ok(method="celery", duration=0)
    target.wait_status(task["id"])
    # A task to attack, still running for seconds.
    victim = target.submit_ok(method="rabbitmq", duration=5)
    body = (
        StatusUpdate(task_id=victim["id"], status=TaskStatus.DONE, result={"x": 1})
        .model_dump_json()
        .encode()
    )
    assert _post_callback(target, body, {}).status_code == 401
    assert _post_callback(target, body, sign_headers("x" * 32, body)).status_code == 401
    stale = sign_headers(target.secret, body, now=time.time() - 3600)
    assert _post_callback(target, body, stale).status_code == 401
    signed = sign_headers(target.secret, body)
    assert _post_callback(target, body.replace(b'"x":1', b'"x":2'), signed).status_code == 401
    assert target.task(victim["id"])["result"] is None
    # An authentic report, then the very same request replayed.
    ok = _post_callback(target, body, signed)
    assert ok.status_code == 200, ok.text
    assert ok.json()["verdict"] == "applied", ok.text
    assert _post_callback(target, body, signed).status_code == 403
    # A late report after the final one changes nothing.
    late = (
        StatusUpdate(task_id=victim["id"], status=TaskStatus.FAILED, error="late")
        .model_dump_json()
        .encode()
    )
    resp = _post_callback(target, late, sign_headers(target.secret, late))
    assert resp.status_code == 200
    assert resp.json()["applied"] is False
    assert resp.json()["verdict"] == "stale"
    final = target.task(victim["id"])
    assert final["status"] == "DONE"
    assert final["error"] is None
    assert final["result"] == {"x": 1}
