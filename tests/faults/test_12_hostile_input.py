"""Hostile input (scenario 12): a 4xx with a reason, never a 5xx, nothing published."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from .faultkit import Scenario, wait_until

#: The api's body limit (MAX_BODY_BYTES, default 1 MiB).
LIMIT = 1_048_576


def raw(text: str | bytes, ctype: str | None = "application/json") -> dict[str, Any]:
    """Request arguments for a body sent as is."""
    body = text.encode() if isinstance(text, str) else text
    return {"content": body, "headers": {"Content-Type": ctype} if ctype else {}}


def chunked(total: int, size: int = 65_536) -> Iterator[bytes]:
    """A body of ``total`` bytes sent in chunks, without a Content-Length."""
    yield b'{"method": "celery", "label": "'
    for _ in range(total // size):
        yield b"x" * size
    yield b'"}'


JSON = {"headers": {"Content-Type": "application/json"}}
Request = tuple[str, str, str, dict[str, Any], int]


def submit(name: str, expected: int, **fields: Any) -> Request:
    return (name, "POST", "/api/tasks", {"json": fields}, expected)


def submit_raw(name: str, expected: int, text: str | bytes, ctype: str | None = None) -> Request:
    args = raw(text) if ctype is None else raw(text, ctype)
    return (name, "POST", "/api/tasks", args, expected)


def hostile_requests() -> list[Request]:
    """(name, HTTP method, path, request arguments, expected status)."""
    celery = '{"method": "celery", '
    return [
        submit("negative duration", 422, method="celery", duration=-1),
        submit("tiny negative duration", 422, method="celery", duration=-1e-300),
        submit_raw("NaN", 422, celery + '"duration": NaN}'),
        submit("NaN string", 422, method="celery", duration="NaN"),
        submit_raw("Infinity", 422, celery + '"duration": Infinity}'),
        submit_raw("-Infinity", 422, '{"method": "rabbitmq", "duration": -Infinity}'),
        submit_raw("overflowing to inf", 422, celery + '"duration": 1e400}'),
        submit("huge", 422, method="celery", duration=1e9),
        submit_raw("huge integer", 422, '{"method": "sync", "duration": 1' + "0" * 400 + "}"),
        # Past Python's 4300-digit limit the JSON parser itself gives up: 422 all the same.
        submit_raw("5000-digit integer", 422, celery + '"duration": 1' + "0" * 5000 + "}"),
        submit("string", 422, method="celery", duration="5"),
        submit("boolean", 422, method="rabbitmq", duration=True),
        submit("null", 422, method="celery", duration=None),
        submit("list", 422, method="celery", duration=[1]),
        submit("object", 422, method="celery", duration={"s": 1}),
        submit("fractional fail_times", 422, method="celery", fail_times=1.5),
        submit_raw(
            "infinite number", 422, celery + '"kind": "process_data", "numbers": [1, Infinity]}'
        ),
        submit("unknown field", 422, method="celery", sudo=True),
        submit("no method", 422, duration=1),
        submit("long label", 422, method="celery", label="x" * 101),
        submit("sync wait huge", 422, method="sync", wait=1e6),
        submit_raw("sync wait NaN", 422, '{"method": "sync", "wait": NaN}'),
        submit_raw("body null", 422, "null"),
        submit_raw("body list", 422, "[]"),
        submit_raw("body string", 422, '"celery"'),
        submit_raw("empty body", 422, ""),
        submit_raw("broken JSON", 422, celery),
        submit_raw("NUL in a name", 422, '{"method": "cel\\u0000ery"}'),
        submit_raw("invalid UTF-8", 422, b'{"method": "celery", "label": "\xff\xfe"}'),
        submit_raw("deep nesting", 422, celery + '"label": ' + "[" * 100_000 + "]" * 100_000 + "}"),
        submit_raw("oversized", 413, celery + '"label": "' + "x" * LIMIT + '"}'),
        ("oversized, chunked", "POST", "/api/tasks", {"content": chunked(LIMIT + 1), **JSON}, 413),
        submit_raw("text/plain", 415, celery + '"duration": 1}', "text/plain"),
        submit_raw("form", 415, "method=celery&duration=1", "application/x-www-form-urlencoded"),
        ("multipart", "POST", "/api/tasks", {"files": {"method": ("m", b"celery")}}, 415),
        submit_raw("no content type", 415, celery + '"duration": 1}', ""),
        ("unknown id", "GET", f"/api/tasks/{uuid.uuid4()}", {}, 404),
        ("unknown id, cancel", "POST", f"/api/tasks/{uuid.uuid4()}/cancel", {}, 404),
        ("id too long", "GET", "/api/tasks/" + "a" * 65, {}, 422),
        ("id traversal", "POST", "/api/tasks/..%2F..%2Fetc/cancel", {}, 404),
        ("id unicode", "GET", "/api/tasks/%F0%9F%92%A3", {}, 404),
        ("id with NUL", "GET", "/api/tasks/a%00b", {}, 422),
        ("id with NUL, cancel", "POST", "/api/tasks/a%00b/cancel", {}, 422),
        ("limit negative", "GET", "/api/tasks?limit=-1", {}, 422),
        ("limit huge", "GET", "/api/tasks?limit=" + "9" * 40, {}, 422),
        ("offset string", "GET", "/api/tasks?offset=abc", {}, 422),
        ("unknown status", "GET", "/api/tasks?status=LOST", {}, 422),
        ("bad time", "GET", "/api/tasks?updated_since=yesterday", {}, 422),
        ("naive time", "GET", "/api/tasks?updated_since=2026-01-01T00:00:00", {}, 422),
        (
            "time before year 1 in UTC",
            "GET",
            "/api/tasks?updated_since=0001-01-01T00:00:00%2B01:00",
            {},
            422,
        ),
        (
            "time after 9999 in UTC",
            "GET",
            "/api/tasks?updated_since=9999-12-31T23:59:59-01:00",
            {},
            422,
        ),
        ("PUT", "PUT", "/api/tasks", {"json": {"method": "celery"}}, 405),
        ("DELETE", "DELETE", f"/api/tasks/{uuid.uuid4()}", {}, 405),
    ]


@pytest.mark.scenario("12 hostile input")
def test_hostile_input_is_refused_with_a_reason(scenario: Scenario) -> None:
    fx = scenario.fx
    total_before = scenario.http.get("/api/tasks", params={"limit": 1}).json()["total"]
    published_before = fx.published_settled()
    wrong = []
    requests = hostile_requests()
    for name, method, path, kwargs, expected in requests:
        resp = scenario.http.request(method, path, **kwargs)
        try:
            reason = resp.json().get("detail")
        except (ValueError, AttributeError):
            reason = None
        if resp.status_code != expected or not reason:
            wrong.append((name, resp.status_code, expected, resp.text[:200]))
    assert not wrong, "\n".join(map(str, wrong))
    assert scenario.http.get("/api/tasks", params={"limit": 1}).json()["total"] == total_before
    # Nothing was published: the one valid task after them is the only new message.
    zero = scenario.submit_ok(method="celery", duration=0)  # zero is a valid duration
    wait_until(
        "exactly one new message",
        lambda: fx.published() - published_before == 1,
        15,
        detail=lambda: fx.published() - published_before,
    )
    scenario.note(f"{len(requests)} hostile requests, all 4xx with a reason")
    verdict = scenario.check()
    assert verdict.tasks[zero["id"]].status == "DONE"
