"""Optional authentication of the UI and the API, in-process against a real SQLite store.

No broker runs here (as in test_http): a request that got past authentication and
reached the submit endpoint is answered 503, a lookup of an unknown task 404. The
live stream with valid credentials is covered by the browser test (tests/e2e).
"""

from __future__ import annotations

import base64
import logging
import os
import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from tasklab_api.config import Settings
from tasklab_api.main import create_app
from tasklab_api.migrate import upgrade
from tasklab_common.messages import StatusUpdate
from tasklab_common.signing import sign_headers
from tasklab_devtools.stack import venv_command
from tasklab_devtools.testing.apisettings import api_settings

KEY_A = secrets.token_urlsafe(24)
KEY_B = secrets.token_hex(16)
USER = "operator"
PASSWORD = secrets.token_urlsafe(18)
CALLBACK_SECRET = secrets.token_urlsafe(24)
BASIC_CHALLENGE = 'Basic realm="tasklab"'
UI = "https://ui.example.com"

#: Every protected route (method, path) and its answer once authenticated.
PROTECTED: list[tuple[str, str, int]] = [
    ("GET", "/", 200),
    ("GET", "/static/app.js", 200),
    ("GET", "/static/style.css", 200),
    ("GET", "/api/tasks", 200),
    ("GET", "/api/tasks/some-task", 404),
    ("POST", "/api/tasks", 503),  # no broker
    ("POST", "/api/tasks/some-task/cancel", 404),
    ("GET", "/api/overview", 200),
    ("GET", "/api/activity", 200),
    ("GET", "/static/js/timeline.js", 200),
    ("GET", "/docs", 200),
    ("GET", "/docs/oauth2-redirect", 200),
    ("GET", "/redoc", 200),
    ("GET", "/openapi.json", 200),
]
#: The live stream never ends, so only its refusal is checked in-process.
PROTECTED_PATHS = [(m, p) for m, p, _ in PROTECTED] + [("GET", "/api/events")]
OPEN = [("/healthz", 200), ("/readyz", 503), ("/metrics", 200)]  # /readyz: no broker


def settings_of(db_url: str, **overrides: object) -> Settings:
    return api_settings(db_url, secret=CALLBACK_SECRET, **overrides)


def serve(tmp: Path, **overrides: object) -> TestClient:
    url = f"sqlite:///{tmp}/api.db"
    upgrade(url)
    return TestClient(create_app(settings_of(url, **overrides)))


BOTH = {"api_keys": f"{KEY_A},{KEY_B}", "auth_basic_user": USER, "auth_basic_password": PASSWORD}


@pytest.fixture(scope="module")
def app_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """API keys and a Basic login configured; the limit of wrong credentials is off
    (this client sends many on purpose; the limit has tests of its own)."""
    with serve(tmp_path_factory.mktemp("auth"), auth_failure_limit=0, **BOTH) as c:
        yield c


def call(c: TestClient, method: str, path: str, headers: dict[str, Any] | None = None) -> Any:
    body = {"method": "celery", "duration": 0} if (method, path) == ("POST", "/api/tasks") else None
    return c.request(method, path, json=body, headers=headers or {})


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


# --------------------------------------------------------------------- off


def test_off_by_default_everything_is_open(tmp_path: Path) -> None:
    with serve(tmp_path) as c:
        settings: Settings = c.app.state.tasklab.settings  # type: ignore[attr-defined]
        assert not settings.auth_enabled
        for method, path, expected in PROTECTED:
            assert call(c, method, path).status_code == expected, path
            # Credentials are not looked at: a wrong one changes nothing.
            assert call(c, method, path, {"X-API-Key": "x"}).status_code == expected, path
        for path, expected in OPEN:
            assert c.get(path).status_code == expected, path
        doc = c.get("/openapi.json").json()
        assert "securitySchemes" not in doc.get("components", {})
        assert "security" not in doc["paths"]["/api/tasks"]["post"]
        assert "401" not in doc["paths"]["/api/tasks"]["post"]["responses"]


# --------------------------------------------------------------------- on


@pytest.mark.parametrize(("method", "path"), PROTECTED_PATHS)
def test_without_credentials_protected_routes_are_401(
    app_client: TestClient, method: str, path: str
) -> None:
    resp = call(app_client, method, path)
    assert resp.status_code == 401, resp.text
    assert resp.headers["www-authenticate"] == BASIC_CHALLENGE
    assert resp.headers["content-type"] == "application/json"
    assert resp.json()["detail"].startswith("authentication required: send a Basic login or")


WRONG: list[tuple[str, dict[str, Any]]] = [
    ("unknown-key-bearer", {"Authorization": f"Bearer {secrets.token_urlsafe(24)}"}),
    ("unknown-key-header", {"X-API-Key": secrets.token_urlsafe(24)}),
    ("key-prefix", {"X-API-Key": KEY_A[:-1]}),
    ("key-plus-one", {"X-API-Key": KEY_A + "x"}),
    ("both-keys-in-one", {"X-API-Key": f"{KEY_A},{KEY_B}"}),
    ("wrong-password", basic(USER, PASSWORD[:-1] + "?")),
    ("wrong-user", basic("admin", PASSWORD)),
    ("key-as-password", basic(USER, KEY_A)),
    ("password-as-key", {"Authorization": f"Bearer {PASSWORD}"}),
    ("basic-not-base64", {"Authorization": "Basic !!!"}),
    ("basic-without-colon", {"Authorization": "Basic " + base64.b64encode(b"x").decode()}),
    ("basic-not-ascii", {"Authorization": "Basic " + base64.b64encode("ü:ü".encode()).decode()}),
    ("latin-1-key", {"X-API-Key": b"\xff" * 20}),
]


@pytest.mark.parametrize("headers", [h for _, h in WRONG], ids=[n for n, _ in WRONG])
def test_wrong_credentials_are_401(app_client: TestClient, headers: dict[str, Any]) -> None:
    for method, path in [("GET", "/api/tasks"), ("POST", "/api/tasks"), ("GET", "/")]:
        resp = call(app_client, method, path, headers)
        assert resp.status_code == 401, (path, resp.text)
        assert resp.headers["www-authenticate"] == BASIC_CHALLENGE
        assert resp.json()["detail"].startswith("invalid credentials")


RIGHT: list[tuple[str, dict[str, str]]] = [
    ("bearer-key-a", {"Authorization": f"Bearer {KEY_A}"}),
    ("bearer-key-b", {"Authorization": f"Bearer {KEY_B}"}),
    ("bearer-lower-case", {"Authorization": f"bearer {KEY_A}"}),
    ("header-key-a", {"X-API-Key": KEY_A}),
    ("header-key-b", {"X-API-Key": KEY_B}),
    ("basic", basic(USER, PASSWORD)),
    ("one-of-two-valid", {"X-API-Key": KEY_B, **basic(USER, "wrong")}),
]


@pytest.mark.parametrize("headers", [h for _, h in RIGHT], ids=[n for n, _ in RIGHT])
def test_valid_credentials_reach_every_route(
    app_client: TestClient, headers: dict[str, str]
) -> None:
    for method, path, expected in PROTECTED:
        resp = call(app_client, method, path, headers)
        assert resp.status_code == expected, (path, resp.text)


def test_health_readiness_and_metrics_stay_open(app_client: TestClient) -> None:
    for headers in ({}, {"X-API-Key": "wrong"}, basic("nobody", "wrong")):
        for path, expected in OPEN:
            resp = app_client.get(path, headers=headers)
            assert resp.status_code == expected, (path, resp.text)
            assert "www-authenticate" not in resp.headers
    assert "tasklab_http_requests_total" in app_client.get("/metrics").text


def _callback(c: TestClient, body: bytes, headers: dict[str, str]) -> Any:
    return c.post(
        "/update_task_status_api/",
        content=body,
        headers={"Content-Type": "application/json", **headers},
    )


def test_the_callback_keeps_its_own_signature(app_client: TestClient) -> None:
    body = StatusUpdate(task_id="t-unknown", status="DONE").model_dump_json().encode()
    unsigned = _callback(app_client, body, {"X-API-Key": KEY_A})  # a key is not a signature
    assert unsigned.status_code == 401
    assert unsigned.json()["detail"].startswith("callback rejected")
    assert "www-authenticate" not in unsigned.headers
    signed = _callback(app_client, body, sign_headers(CALLBACK_SECRET, body))
    assert signed.status_code == 404  # authentic, without any API credential; unknown task


def test_housekeeping_keeps_its_own_signature(app_client: TestClient) -> None:
    """The beat's housekeeping request is signed like a callback and needs no API key."""
    body = b'{"requested_by": "beat"}'
    headers = {"Content-Type": "application/json"}
    unsigned = app_client.post(
        "/internal/housekeeping", content=body, headers={**headers, "X-API-Key": KEY_A}
    )
    assert unsigned.status_code == 401 and "www-authenticate" not in unsigned.headers
    signed = app_client.post(
        "/internal/housekeeping",
        content=body,
        headers={**headers, **sign_headers(CALLBACK_SECRET, body)},
    )
    assert signed.status_code == 200, signed.text


def test_openapi_lists_the_configured_schemes(app_client: TestClient) -> None:
    doc = app_client.get("/openapi.json", headers={"X-API-Key": KEY_A}).json()
    schemes = doc["components"]["securitySchemes"]
    assert schemes["BasicAuth"]["scheme"] == "basic"
    assert schemes["BearerAuth"]["scheme"] == "bearer"
    assert schemes["ApiKeyAuth"] == {**schemes["ApiKeyAuth"], "in": "header", "name": "X-API-Key"}
    anyof: list[dict[str, list[str]]] = [{"BasicAuth": []}, {"BearerAuth": []}, {"ApiKeyAuth": []}]
    for path, op in [
        ("/api/tasks", "post"),
        ("/api/tasks", "get"),
        ("/api/tasks/{task_id}/cancel", "post"),
        ("/api/events", "get"),
        ("/api/overview", "get"),
    ]:
        assert doc["paths"][path][op]["security"] == anyof, path
        assert "401" in doc["paths"][path][op]["responses"], path
    for path, op in [
        ("/healthz", "get"),
        ("/metrics", "get"),
        ("/update_task_status_api/", "post"),
        ("/internal/housekeeping", "post"),
    ]:
        assert "security" not in doc["paths"][path][op], path
        signed = path.startswith(("/update", "/internal"))
        assert "401" not in doc["paths"][path][op]["responses"] or signed, path


def test_only_api_keys(tmp_path: Path) -> None:
    with serve(tmp_path, api_keys=KEY_A) as c:
        missing = c.get("/api/tasks")
        assert missing.status_code == 401
        assert missing.headers["www-authenticate"] == 'Bearer realm="tasklab"'
        assert "Basic" not in missing.json()["detail"]
        assert c.get("/api/tasks", headers=basic(USER, PASSWORD)).status_code == 401
        assert c.get("/api/tasks", headers={"X-API-Key": KEY_B}).status_code == 401
        assert c.get("/api/tasks", headers={"Authorization": f"Bearer {KEY_A}"}).status_code == 200
        doc = c.get("/openapi.json", headers={"X-API-Key": KEY_A}).json()
        assert set(doc["components"]["securitySchemes"]) == {"BearerAuth", "ApiKeyAuth"}


def test_only_a_basic_login(tmp_path: Path) -> None:
    with serve(tmp_path, auth_basic_user=USER, auth_basic_password=PASSWORD) as c:
        for headers in ({}, {"X-API-Key": PASSWORD}, {"Authorization": f"Bearer {PASSWORD}"}):
            resp = c.get("/", headers=headers)
            assert resp.status_code == 401
            assert resp.headers["www-authenticate"] == BASIC_CHALLENGE
        assert c.get("/", headers=basic(USER, PASSWORD)).status_code == 200
        doc = c.get("/openapi.json", headers=basic(USER, PASSWORD)).json()
        assert set(doc["components"]["securitySchemes"]) == {"BasicAuth"}


# --------------------------------------------------------------------- other checks


def test_refused_requests_do_not_use_the_submission_limit(tmp_path: Path) -> None:
    """Authentication comes before the per-address rate limit: requests without
    valid credentials (from the same address) cannot exhaust a client's budget."""
    with serve(tmp_path, submit_rate=0.001, submit_burst=2, **BOTH) as c:
        for headers in [{}, {"X-API-Key": "wrong"}] * 5:
            assert call(c, "POST", "/api/tasks", headers).status_code == 401
        good = {"X-API-Key": KEY_A}
        assert call(c, "POST", "/api/tasks", good).status_code == 503  # past the limit
        assert call(c, "POST", "/api/tasks", good).status_code == 503
        assert call(c, "POST", "/api/tasks", good).status_code == 429  # the burst is spent


def test_cross_origin_writes_are_refused_even_with_credentials(app_client: TestClient) -> None:
    """A browser sends a remembered Basic login with a cross-site form post too: the
    origin check, in front of authentication, is what stops it."""
    cross = {"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"}
    for headers in ({}, basic(USER, PASSWORD)):
        resp = call(app_client, "POST", "/api/tasks/some-task/cancel", {**cross, **headers})
        assert resp.status_code == 403, resp.text
        assert resp.json()["detail"].startswith("cross-origin request refused")
    same = {"Origin": "http://testserver", **basic(USER, PASSWORD)}
    assert call(app_client, "POST", "/api/tasks/some-task/cancel", same).status_code == 404


def test_preflight_allows_the_key_headers(tmp_path: Path) -> None:
    with serve(tmp_path, allowed_origins=UI, api_keys=KEY_A) as c:
        resp = c.options(
            "/api/tasks",
            headers={
                "Origin": UI,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, x-api-key, content-type",
            },
        )
        assert resp.status_code == 200, resp.text  # a preflight carries no credentials
        allowed = resp.headers["access-control-allow-headers"].lower()
        assert {"authorization", "x-api-key", "content-type"} <= set(allowed.split(", "))
        assert "access-control-allow-credentials" not in resp.headers
        ok = c.get("/api/tasks", headers={"Origin": UI, "X-API-Key": KEY_A})
        assert ok.status_code == 200
        assert ok.headers["access-control-allow-origin"] == UI


def test_secrets_stay_out_of_logs_and_reprs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with serve(tmp_path, **BOTH) as c:
        call(c, "GET", "/api/tasks", {"X-API-Key": KEY_A})
        call(c, "GET", "/api/tasks", basic(USER, PASSWORD))
        call(c, "GET", "/api/tasks", {"X-API-Key": KEY_A[:-1]})
        settings = c.app.state.tasklab.settings  # type: ignore[attr-defined]
    assert "authentication of the UI and the API: on: 2 API keys, Basic login of user" in (
        caplog.text
    )
    for secret in (KEY_A, KEY_B, PASSWORD, KEY_A[:-1]):
        assert secret not in caplog.text
        assert secret not in repr(settings)
        assert secret not in str(settings.model_dump())


# --------------------------------------------------------------------- settings


@pytest.mark.parametrize(
    ("values", "problem"),
    [
        ({"api_keys": "short-key"}, "key 1 of 1 has 9 characters; each key needs at least 16"),
        ({"api_keys": f"{KEY_A}, tooshort"}, "key 2 of 2 has 8 characters"),
        ({"api_keys": ""}, "holds no key"),
        ({"api_keys": " , \n"}, "holds no key"),
        ({"api_keys": "ключ-" * 5}, "only visible ASCII"),
        ({"auth_basic_user": USER}, "set both or neither"),
        ({"auth_basic_password": PASSWORD}, "set both or neither"),
        ({"auth_basic_user": USER, "auth_basic_password": "short"}, "at least 16"),
        ({"auth_basic_user": USER, "auth_basic_password": PASSWORD + "\n"}, "trailing newline"),
        ({"auth_basic_user": "", "auth_basic_password": PASSWORD}, "set but empty"),
        ({"auth_basic_user": "a:b", "auth_basic_password": PASSWORD}, "no ':'"),
    ],
)
def test_bad_credentials_settings_are_refused(values: dict[str, str], problem: str) -> None:
    with pytest.raises(ValidationError) as caught:
        settings_of("sqlite:///x.db", **values)
    messages = " ".join(str(e["msg"]) for e in caught.value.errors())
    assert problem in messages
    for value in values.values():
        if len(value.strip()) > 3:
            assert value.strip() not in messages  # the reason, never the secret


def test_api_keys_are_split_on_commas_and_white_space() -> None:
    settings = settings_of("sqlite:///x.db", api_keys=f" {KEY_A},{KEY_B}\n{KEY_A}  ")
    assert settings.api_keys is not None
    assert [k.get_secret_value() for k in settings.api_keys] == [KEY_A, KEY_B]
    assert settings.auth_enabled


@pytest.mark.parametrize(
    ("env", "problem"),
    [
        ({"API_KEYS": "0123456789abcde"}, "API_KEYS: key 1 of 1 has 15 characters"),
        (
            {"AUTH_BASIC_USER": USER, "AUTH_BASIC_PASSWORD": "0123456789abcde"},
            "AUTH_BASIC_PASSWORD: must be at least 16 characters",
        ),
        ({"AUTH_BASIC_USER": USER}, "AUTH_BASIC_USER and AUTH_BASIC_PASSWORD go together"),
    ],
)
def test_the_api_refuses_to_start(tmp_path: Path, env: dict[str, str], problem: str) -> None:
    """The real command, with a one-line reason that does not show the value."""
    done = subprocess.run(
        [venv_command("tasklab-api"), "serve"],
        env={
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "RMQ_URL": "amqp://nobody:nothing@127.0.0.1:1/",
            "CALLBACK_SECRET": CALLBACK_SECRET,
            "DATABASE_URL": f"sqlite:///{tmp_path}/api.db",
            **env,
        },
        cwd=tmp_path,  # no .env here
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("tasklab-api: invalid configuration: "), line
    assert problem in line
    assert "0123456789abcde" not in line
    assert not (tmp_path / "api.db").exists()  # it stopped before touching anything


# --------------------------------------------------------------------- guessing


def test_wrong_credentials_are_limited_per_address(tmp_path: Path) -> None:
    """AUTH_FAILURE_LIMIT wrong attempts at once, then 429 with Retry-After; while
    limited even the right credentials are not checked; no credentials is no failure."""
    with serve(tmp_path, auth_failure_limit=3, **BOTH) as c:
        for _ in range(5):  # a browser before its login prompt: not a failure
            assert call(c, "GET", "/api/tasks").status_code == 401
        for headers in [{"X-API-Key": "wrong"}, basic(USER, "wrong"), {"X-API-Key": "x"}]:
            assert call(c, "GET", "/api/tasks", headers).status_code == 401
        for headers in [{"X-API-Key": "wrong"}, {"X-API-Key": KEY_A}, basic(USER, PASSWORD)]:
            resp = call(c, "GET", "/api/tasks", headers)
            assert resp.status_code == 429, resp.text
            assert 1 <= int(resp.headers["retry-after"]) <= 20
            assert resp.json()["detail"].startswith("too many wrong credentials")
        assert call(c, "GET", "/api/tasks").status_code == 401  # still asked to log in
        assert call(c, "GET", "/healthz").status_code == 200


def test_the_right_credentials_never_use_the_budget(tmp_path: Path) -> None:
    with serve(tmp_path, auth_failure_limit=2, **BOTH) as c:
        for _ in range(10):
            assert call(c, "GET", "/api/tasks", {"X-API-Key": KEY_A}).status_code == 200
        for _ in range(2):
            assert call(c, "GET", "/api/tasks", {"X-API-Key": "wrong"}).status_code == 401
        assert call(c, "GET", "/api/tasks", {"X-API-Key": KEY_A}).status_code == 429


def test_the_budget_refills(tmp_path: Path) -> None:
    """At 60 a minute one wrong attempt comes back every second."""
    with serve(tmp_path, auth_failure_limit=60, **BOTH) as c:
        for _ in range(60):
            assert call(c, "GET", "/api/tasks", {"X-API-Key": "wrong"}).status_code == 401
        resp = call(c, "GET", "/api/tasks", {"X-API-Key": KEY_A})
        assert resp.status_code == 429 and resp.headers["retry-after"] == "1"
        time.sleep(1.1)
        assert call(c, "GET", "/api/tasks", {"X-API-Key": KEY_A}).status_code == 200
