"""The HTTP edge of the api, in-process against a real SQLite store.

No broker runs here: a valid submission is refused with 503, and every invalid one
is refused with its own 4xx before anything could be published.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tasklab_api.main import create_app
from tasklab_api.migrate import upgrade
from tasklab_common.messages import (
    MAX_REPORTS_PER_REQUEST,
    UNKNOWN_TASK_HEADER,
    StatusUpdate,
    TaskParams,
)
from tasklab_common.models import Method, TaskKind
from tasklab_common.signing import NONCE_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, sign_headers
from tasklab_devtools.testing.apisettings import api_settings


def _details(resp: Any) -> str:
    return json.dumps(resp.json()["detail"])


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"method": "celery", "duration": -1}, "greater than or equal"),
        ({"method": "celery", "duration": 10**9}, "less than or equal"),
        ({"method": "celery", "duration": "5"}, "valid number"),
        ({"method": "celery", "duration": True}, "valid number"),
        ({"method": "celery", "duration": None}, "valid number"),
        ({"method": "carrier-pigeon", "duration": 1}, "method"),
        ({"duration": 1}, "method"),
        ({"method": "celery", "kind": "mine_bitcoin"}, "kind"),
        ({"method": "celery", "kind": "process_data"}, "numbers"),
        ({"method": "celery", "kind": "process_data", "numbers": []}, "numbers"),
        ({"method": "celery", "kind": "process_data", "numbers": ["a"]}, "numbers"),
        ({"method": "celery", "numbers": [1]}, "only for kind process_data"),
        ({"method": "celery", "fail_times": 99}, "fail_times"),
        ({"method": "celery", "duraton": 1}, "duraton"),
        ({"method": "celery", "wait": 5}, "only for method sync"),
        ({"method": "sync", "wait": 10**6}, "at most"),
        ([1, 2], "dict"),
    ],
)
def test_invalid_submissions_are_422_with_a_reason(
    client: TestClient, body: Any, needle: str
) -> None:
    resp = client.post("/api/tasks", json=body)
    assert resp.status_code == 422, resp.text
    assert needle in _details(resp) or needle in resp.text


@pytest.mark.parametrize(
    "raw",
    ['{"method":"celery","duration":NaN}', '{"method":"celery","duration":Infinity}', "{not json"],
)
def test_non_finite_and_broken_json_are_422(client: TestClient, raw: str) -> None:
    resp = client.post("/api/tasks", content=raw, headers={"Content-Type": "application/json"})
    assert resp.status_code == 422, resp.text


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        # (within the fixture's 4 KiB body limit; a 5000-digit number: fault scenario 12)
        (b'{"method": "celery", "label": ' + b"[" * 2000 + b"]" * 2000 + b"}", "nested"),
        (b'{"method": "celery", "label": "\xff\xfe"}', "UTF-8"),
    ],
)
def test_json_the_parser_gives_up_on_is_422_with_the_reason(
    client: TestClient, raw: bytes, reason: str
) -> None:
    """(FastAPI answers these with a bare 400 "There was an error parsing the body".)"""
    resp = client.post("/api/tasks", content=raw, headers={"Content-Type": "application/json"})
    assert resp.status_code == 422, resp.text
    assert reason in _details(resp), resp.text


def test_unknown_query_parameters_are_422(client: TestClient) -> None:
    """A misspelt filter (?stauts=DONE) is named, not ignored (which listed everything)."""
    resp = client.get("/api/tasks", params={"stauts": "DONE"})
    assert resp.status_code == 422, resp.text
    assert resp.json()["detail"][0]["loc"] == ["query", "stauts"]
    assert "status" in resp.json()["detail"][0]["msg"]  # what the route does take
    assert client.get("/api/overview", params={"x": "1"}).status_code == 422
    assert client.get("/api/tasks/nope", params={"verbose": "1"}).status_code == 422
    assert client.get("/api/tasks", params={"status": "DONE", "limit": 5}).status_code == 200
    assert client.get("/healthz", params={"probe": "k8s"}).status_code == 200  # not the API


def test_oversized_body_is_413(client: TestClient) -> None:
    body = {"method": "celery", "kind": "process_data", "numbers": [1.5] * 5000}
    resp = client.post("/api/tasks", json=body)
    assert resp.status_code == 413 and "larger than" in resp.json()["detail"]


def test_wrong_content_type_is_415(client: TestClient) -> None:
    resp = client.post(
        "/api/tasks", content="method=celery", headers={"Content-Type": "text/plain"}
    )
    assert resp.status_code == 415


def test_valid_submission_without_broker_is_503_and_stores_nothing(client: TestClient) -> None:
    resp = client.post("/api/tasks", json={"method": "celery", "duration": 1})
    assert resp.status_code == 503 and resp.json()["detail"] == "broker unavailable"
    assert resp.headers["Retry-After"]
    assert client.get("/api/tasks").json()["total"] == 0


def test_unknown_task_is_404(client: TestClient) -> None:
    assert client.get("/api/tasks/nope").status_code == 404
    assert client.post("/api/tasks/nope/cancel").status_code == 404


def test_list_validates_filters(client: TestClient) -> None:
    assert client.get("/api/tasks?status=SLEEPING").status_code == 422
    assert client.get("/api/tasks?limit=0").status_code == 422
    assert client.get("/api/tasks?updated_since=2026-01-01T00:00:00").status_code == 422
    ok = client.get("/api/tasks?status=DONE&method=celery&updated_since=2026-01-01T00:00:00Z")
    assert ok.status_code == 200 and ok.json()["items"] == []


def test_health_ready_and_docs(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.json()["broker"].startswith("error")
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/api/tasks", "/api/tasks/{task_id}", "/update_task_status_api/"} <= set(paths)
    assert "tasklab_tasks_submitted_total" in client.get("/metrics").text
    page = client.get("/")
    assert page.status_code == 200 and "Send via Celery" in page.text


def _callback(client: TestClient, body: bytes, headers: dict[str, str]) -> Any:
    return client.post(
        "/update_task_status_api/",
        content=body,
        headers={"Content-Type": "application/json", **headers},
    )


def test_callback_authentication(client: TestClient, secret: str) -> None:
    body = StatusUpdate(task_id="t-unknown", status="DONE").model_dump_json().encode()
    assert _callback(client, body, {}).status_code == 401
    forged = sign_headers("not-the-secret-at-all", body)
    assert _callback(client, body, forged).status_code == 401
    stale = sign_headers(secret, body, now=time.time() - 3600)
    assert _callback(client, body, stale).status_code == 401
    tampered = sign_headers(secret, body)
    assert _callback(client, body.replace(b"DONE", b"FAILED"), tampered).status_code == 401
    good = sign_headers(secret, body)
    unknown = _callback(client, body, good)
    assert unknown.status_code == 404  # authentic, unknown task, named as such
    assert unknown.headers[UNKNOWN_TASK_HEADER] == "1"
    assert _callback(client, body, good).status_code == 403  # the same request again


def _rejected_unauthenticated(client: TestClient) -> float:
    return _sample(
        client.get("/metrics").text, 'tasklab_callbacks_total{outcome="unauthenticated"}'
    )


@pytest.mark.parametrize("route", ["/update_task_status_api/", "/internal/housekeeping"])
def test_signature_headers_of_any_shape_are_401(
    client: TestClient, secret: str, route: str
) -> None:
    """Header values are any Latin-1 text: each bad shape is a 401 with a reason, counted
    as unauthenticated (the alert on rejected callbacks sees it), never a 500."""
    body = b'{"requested_by": "w1"}'
    good = sign_headers(secret, body)
    hostile: list[dict[str, str | bytes]] = [
        {**good, SIGNATURE_HEADER: b"\xe9"},
        {**good, SIGNATURE_HEADER: b"\xe9" * 64},
        {**good, SIGNATURE_HEADER: b"\xff" * 32 + b"0" * 32},
        {**good, NONCE_HEADER: b"\xe9\xe9"},
        {**good, TIMESTAMP_HEADER: "\u0661\u0662".encode()},
        {**good, TIMESTAMP_HEADER: b"9" * 500},
    ]
    before = _rejected_unauthenticated(client)
    for headers in hostile:
        resp = client.post(
            route, content=body, headers={"Content-Type": "application/json", **headers}
        )
        assert resp.status_code == 401, (headers, resp.text)
        assert "malformed" in resp.json()["detail"], resp.text
    assert _rejected_unauthenticated(client) == before + len(hostile)


def test_callback_rejects_invalid_body(client: TestClient, secret: str) -> None:
    for raw in [b'{"task_id": "x", "status": "PENDING"}', b'{"task_id": "x"}', b"[]"]:
        resp = _callback(client, raw, sign_headers(secret, raw))
        assert resp.status_code == 422, raw


def test_the_callback_answers_like_every_route(client: TestClient, secret: str) -> None:
    """Served by its own endpoint, the callback answers as a FastAPI route would: 405
    with Allow for another method, JSON errors with a reason, the HTTP metrics under
    its path."""
    resp = client.get("/update_task_status_api/")
    assert (resp.status_code, resp.headers["allow"]) == (405, "POST")
    assert resp.json() == {"detail": "Method Not Allowed"}
    raw = b'{"task_id": "x"}'
    resp = _callback(client, raw, sign_headers(secret, raw))
    assert resp.headers["content-type"] == "application/json"
    (problem,) = resp.json()["detail"]
    assert (problem["loc"], problem["type"]) == (["status"], "missing")
    assert "input" not in problem  # never the input echoed
    labels = (
        'tasklab_http_requests_total{code="422",method="POST",route="/update_task_status_api/"}'
    )
    assert _sample(client.get("/metrics").text, labels) >= 1


def _task(client: TestClient) -> str:
    store = client.app.state.tasklab.store  # type: ignore[attr-defined]
    task = client.portal.call(store.create, Method.CELERY, TaskKind.PROCESS_TASK, TaskParams())  # type: ignore[union-attr]
    return str(task.id)


def _report(task_id: str, status: str) -> dict[str, Any]:
    report: dict[str, Any] = json.loads(
        StatusUpdate(task_id=task_id, status=status, worker="w1").model_dump_json()
    )
    return report


def test_a_batch_of_reports_is_answered_report_by_report(client: TestClient, secret: str) -> None:
    """An array of reports is one signed request: each applied in order, with its own
    reply (an unknown task's says so instead of a 404); the same request again is a
    replay and changes nothing."""
    one, two = _task(client), _task(client)
    batch = [
        _report(one, "IN_PROGRESS"),
        _report(one, "DONE"),
        _report("no-such-task", "IN_PROGRESS"),
        _report(two, "IN_PROGRESS"),
    ]
    body = json.dumps(batch).encode()
    headers = sign_headers(secret, body)
    resp = _callback(client, body, headers)
    assert resp.status_code == 200, resp.text
    replies = resp.json()
    assert [(r["status"], r["applied"], r["proceed"], r["unknown"]) for r in replies] == [
        ("IN_PROGRESS", True, True, False),
        ("DONE", True, False, False),
        ("FAILED", False, False, True),
        ("IN_PROGRESS", True, True, False),
    ]
    assert [client.get(f"/api/tasks/{t}").json()["status"] for t in (one, two)] == [
        "DONE",
        "IN_PROGRESS",
    ]
    assert _callback(client, body, headers).status_code == 403
    assert client.get(f"/api/tasks/{two}").json()["status"] == "IN_PROGRESS"


@pytest.mark.parametrize(
    ("items", "needle"),
    [(0, "at least 1"), (MAX_REPORTS_PER_REQUEST + 1, f"at most {MAX_REPORTS_PER_REQUEST}")],
)
def test_a_batch_of_no_or_too_many_reports_is_422(
    tmp_path: Path, secret: str, items: int, needle: str
) -> None:
    url = f"sqlite:///{tmp_path}/api.db"
    upgrade(url)
    with TestClient(create_app(api_settings(url, secret=secret))) as client:
        _assert_refused_batch(client, secret, items, needle)


def _assert_refused_batch(client: TestClient, secret: str, items: int, needle: str) -> None:
    task = _task(client)
    body = json.dumps([_report(task, "IN_PROGRESS")] * items).encode()
    resp = _callback(client, body, sign_headers(secret, body))
    assert resp.status_code == 422, resp.text
    assert needle in _details(resp)
    assert client.get(f"/api/tasks/{task}").json()["status"] == "PENDING"


def test_a_batch_with_a_bad_report_applies_none(client: TestClient, secret: str) -> None:
    task = _task(client)
    body = json.dumps([_report(task, "IN_PROGRESS"), {"task_id": task}]).encode()
    resp = _callback(client, body, sign_headers(secret, body))
    assert resp.status_code == 422, resp.text
    (problem,) = resp.json()["detail"]
    assert (problem["loc"], problem["type"]) == ([1, "status"], "missing")
    assert client.get(f"/api/tasks/{task}").json()["status"] == "PENDING"


def test_overview_without_broker_stats(client: TestClient) -> None:
    body = client.get("/api/overview").json()
    assert body["counts"]["PENDING"] == 0
    assert body["in_progress"] == 0
    assert body["queues"] is None
    assert "RMQ_MANAGEMENT_URL" in body["broker_stats_error"]
    assert body["workers"] == []


def test_label_is_limited(client: TestClient) -> None:
    resp = client.post("/api/tasks", json={"method": "celery", "label": "x" * 101})
    assert resp.status_code == 422
    assert "label" in resp.text


def _sample(text: str, line_start: str) -> float:
    for line in text.splitlines():
        if line.startswith(line_start + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_metrics_name_routes_by_template(client: TestClient) -> None:
    by_template = (
        'tasklab_http_requests_total{code="404",method="GET",route="/api/tasks/{task_id}"}'
    )
    before = _sample(client.get("/metrics").text, by_template)
    client.get("/api/tasks/some-id")
    client.post("/api/tasks", json={"method": "celery", "duration": -1})
    text = client.get("/metrics").text
    assert _sample(text, by_template) == before + 1
    assert _sample(text, 'tasklab_http_requests_total{code="422",method="POST",route="/api/tasks"}')
    assert 'tasklab_tasks{status="PENDING"} 0.0' in text
    assert "tasklab_broker_stats_up 0.0" in text


def _housekeeping(client: TestClient, body: bytes, headers: dict[str, str]) -> Any:
    return client.post(
        "/internal/housekeeping",
        content=body,
        headers={"Content-Type": "application/json", **headers},
    )


def test_housekeeping_is_signed_and_reports(client: TestClient, secret: str) -> None:
    body = b'{"requested_by": "beat-test"}'
    assert _housekeeping(client, body, {}).status_code == 401
    forged = sign_headers("not-the-secret-at-all", body)
    assert _housekeeping(client, body, forged).status_code == 401
    bad = b'{"requested_by": 5, "extra": 1}'
    assert _housekeeping(client, bad, sign_headers(secret, bad)).status_code == 422
    runs_before = _housekeeping_runs(client)
    good = sign_headers(secret, body)
    resp = _housekeeping(client, body, good)
    assert resp.status_code == 200, resp.text
    assert resp.json() == {
        "stuck_failed": 0,
        "orphans_failed": 0,
        "purged_tasks": 0,
        "purged_events": 0,
    }
    assert _housekeeping(client, body, good).status_code == 403  # replayed
    assert _housekeeping_runs(client) == runs_before + 1


def _housekeeping_runs(client: TestClient) -> float:
    """The runs counter (process-wide: other tests' runs count too)."""
    for line in client.get("/metrics").text.splitlines():
        if line.startswith("tasklab_housekeeping_runs_total "):
            return float(line.split()[1])
    raise AssertionError("tasklab_housekeeping_runs_total not exported")


def test_out_of_range_input_is_422_not_500(client: TestClient, secret: str) -> None:
    """Values that pass a type check but break further in (a time outside the years 1 to
    9999 once in UTC; a NUL, which PostgreSQL's text cannot hold) get a reason."""
    for query in ("0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"):
        resp = client.get("/api/tasks", params={"updated_since": query})
        assert resp.status_code == 422, (query, resp.text)
    assert client.get("/api/tasks/a%00b").status_code == 422
    assert client.post("/api/tasks/a%00b/cancel").status_code == 422
    body = b'{"task_id": "a\\u0000b", "status": "DONE"}'
    resp = _callback(client, body, sign_headers(secret, body))
    assert resp.status_code == 422, resp.text
    assert "task_id" in resp.text
    body = b'{"task_id": "t-1", "status": "IN_PROGRESS", "at": "0001-01-01T00:00:00+01:00"}'
    resp = _callback(client, body, sign_headers(secret, body))
    assert resp.status_code == 422, resp.text
    assert "out of range" in resp.text


def test_the_workers_view_is_off_outside_a_cluster(client: TestClient) -> None:
    """Not in a pod: /api/cluster says why, and scaling is refused with that reason."""
    view = client.get("/api/cluster")
    assert view.status_code == 200
    assert view.json()["available"] is False
    assert "not running in a Kubernetes pod" in view.json()["reason"]
    refused = client.post("/api/cluster/workloads/celery-worker/scale", json={"replicas": 2})
    assert refused.status_code == 409
    assert "not on Kubernetes" in refused.json()["detail"]
    invalid = client.post("/api/cluster/workloads/celery-worker/scale", json={"replicas": "2"})
    assert invalid.status_code == 422


def test_security_headers_and_local_api_docs(client: TestClient) -> None:
    """Every page says what it may load (the UI: only its own files; the viewers: their
    own inline start-up script by hash) and that it may not be framed; the viewers'
    assets are the api's own, not a CDN's."""
    page = client.get("/")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self';" in csp and "frame-ancestors 'none'" in csp
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["x-content-type-options"] == "nosniff"
    assert client.get("/api/tasks").headers["x-content-type-options"] == "nosniff"
    for path in ("/docs", "/redoc"):
        viewer = client.get(path)
        assert viewer.status_code == 200
        assert "cdn." not in viewer.text and "googleapis" not in viewer.text, viewer.text
        assert "'sha256-" in viewer.headers["content-security-policy"] or path == "/redoc"
        for asset in re.findall(r'(?:src|href)="(/docs/assets/[^"]+)"', viewer.text):
            got = client.get(asset)
            assert got.status_code == 200 and len(got.content) > 1000, asset
    assert client.get("/docs/assets/../../etc/passwd").status_code == 404
    assert client.get("/docs/assets/nothing.js").status_code == 404
