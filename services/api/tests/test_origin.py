"""Cross-origin protection, in-process against a real SQLite store (no broker).

The header sets are what browsers send: a cross-site form post or ``fetch`` carries
``Origin`` and ``Sec-Fetch-Site``; same-origin requests carry the api's own origin;
curl and the workers send neither.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from tasklab_api.main import create_app
from tasklab_api.migrate import upgrade
from tasklab_api.origin import normalize_origin
from tasklab_devtools.testing.apisettings import api_settings

#: TestClient's own origin (it sends ``Host: testserver``).
SELF = "http://testserver"
EVIL = "https://evil.example"
UI = "https://ui.example.com"


@pytest.fixture(scope="module")
def app_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    url = f"sqlite:///{tmp_path_factory.mktemp('origin')}/api.db"
    upgrade(url)
    with TestClient(
        create_app(api_settings(url, allowed_origins=f"{UI}, http://localhost:5173"))
    ) as c:
        yield c


def cross_site(origin: str = EVIL, **more: str) -> dict[str, str]:
    return {"Origin": origin, "Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors", **more}


@pytest.mark.parametrize(
    ("path", "content", "ctype"),
    [
        ("/api/tasks", b'{"method": "celery"}', "text/plain"),  # a "simple" request
        ("/api/tasks", b"method=celery", "application/x-www-form-urlencoded"),  # a form
        ("/api/tasks", b'{"method": "celery"}', "application/json"),
        ("/api/tasks/some-task/cancel", b"", None),  # no body at all
        ("/update_task_status_api/", b"{}", "application/json"),
    ],
)
@pytest.mark.parametrize(
    "headers",
    [
        cross_site(),
        cross_site("null"),
        cross_site("http://testserver.evil.example"),
        cross_site("https://testserver:8443"),  # another port is another origin
        {"Sec-Fetch-Site": "cross-site"},  # no Origin (old browsers)
        {"Sec-Fetch-Site": "same-site"},
        {"Origin": "not a url"},
    ],
)
def test_cross_origin_writes_are_403_with_a_reason(
    app_client: TestClient, path: str, content: bytes, ctype: str | None, headers: dict[str, str]
) -> None:
    sent = {**headers, **({"Content-Type": ctype} if ctype else {})}
    resp = app_client.post(path, content=content, headers=sent)
    assert resp.status_code == 403, resp.text
    assert resp.json()["detail"].startswith("cross-origin request refused")
    assert "access-control-allow-origin" not in resp.headers
    assert app_client.get("/api/tasks").json()["total"] == 0


@pytest.mark.parametrize(
    "headers",
    [
        {},  # curl, scripts, the workers
        {"Origin": SELF, "Sec-Fetch-Site": "same-origin"},  # the api's own UI
        {"Origin": "HTTP://TESTSERVER:80"},
        {"Sec-Fetch-Site": "same-origin"},
        {"Sec-Fetch-Site": "none"},  # typed into the address bar
        {"Origin": UI, "Sec-Fetch-Site": "cross-site"},  # allowed by ALLOWED_ORIGINS
        {"Origin": "http://localhost:5173"},
    ],
)
def test_same_origin_and_non_browser_writes_pass(
    app_client: TestClient, headers: dict[str, str]
) -> None:
    # Past the origin check, a submission meets the missing broker (503), a cancel
    # of an unknown task gets 404: the request reached the api.
    resp = app_client.post("/api/tasks", json={"method": "celery"}, headers=headers)
    assert resp.status_code == 503, resp.text
    resp = app_client.post("/api/tasks/nope/cancel", headers=headers)
    assert resp.status_code == 404, resp.text


def test_reads_are_not_checked(app_client: TestClient) -> None:
    resp = app_client.get("/api/tasks", headers=cross_site())
    assert resp.status_code == 200
    assert "access-control-allow-origin" not in resp.headers  # the page cannot read it


def test_preflight_only_for_allowed_origins(app_client: TestClient) -> None:
    ask = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type",
    }
    ok = app_client.options("/api/tasks", headers={"Origin": UI, **ask})
    assert ok.status_code == 200
    assert ok.headers["access-control-allow-origin"] == UI
    refused = app_client.options("/api/tasks", headers={"Origin": EVIL, **ask})
    assert "access-control-allow-origin" not in refused.headers


def test_without_allowed_origins_no_cors_at_all(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/api.db"
    upgrade(url)
    with TestClient(create_app(api_settings(url))) as c:
        ask = {"Origin": UI, "Access-Control-Request-Method": "POST"}
        assert "access-control-allow-origin" not in c.options("/api/tasks", headers=ask).headers
        assert c.post("/api/tasks/x/cancel", headers={"Origin": UI}).status_code == 403
        assert c.post("/api/tasks/x/cancel", headers={"Origin": SELF}).status_code == 404


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("https://UI.example.com", "https://ui.example.com"),
        ("https://ui.example.com:443/", "https://ui.example.com"),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
        ("http://[::1]:8080", "http://[::1]:8080"),
        ("null", None),
        ("ftp://x.example", None),
        ("https://ui.example.com/path", None),
        ("https://user@ui.example.com", None),
        ("http://x.example:99999", None),
    ],
)
def test_normalize_origin(raw: str, normalized: str | None) -> None:
    assert normalize_origin(raw) == normalized


def test_allowed_origins_setting_is_validated(tmp_path: Path) -> None:
    settings = api_settings(
        "sqlite:///x.db", allowed_origins="https://A.example, http://b.example:81"
    )
    assert settings.allowed_origins == ("https://a.example", "http://b.example:81")
    with pytest.raises(ValidationError, match="not an origin"):
        api_settings("sqlite:///x.db", allowed_origins="https://a.example/app")


def test_a_host_the_api_does_not_serve_is_refused(tmp_path: Path) -> None:
    """DNS rebinding: a page on rebind.example whose name resolves to the api is
    same-origin with it; the api refuses its Host (any method), whatever the Origin."""
    url = f"sqlite:///{tmp_path}/api.db"
    upgrade(url)
    settings = api_settings(url, allowed_hosts="testserver, *.tasklab.example")
    with TestClient(create_app(settings)) as c:
        evil = {"Host": "rebind.evil.example:8080", "Origin": "http://rebind.evil.example:8080"}
        for method, path in (("POST", "/api/tasks"), ("GET", "/api/tasks"), ("GET", "/")):
            resp = c.request(method, path, headers=evil, json={"method": "celery"})
            assert resp.status_code == 400, (method, path, resp.text)
            assert "unknown host" in resp.json()["detail"]
        for host in ("127.0.0.1:8080", "[::1]:8080", "10.244.0.7:8000", "localhost:8080",
                     "ui.tasklab.example", "testserver"):  # fmt: skip
            assert c.get("/healthz", headers={"Host": host}).status_code == 200, host
        for host in ("tasklab.example.evil", "[::1", "a b", "localhost:x"):
            assert c.get("/healthz", headers={"Host": host}).status_code == 400, host


def test_allowed_hosts_are_host_names() -> None:
    with pytest.raises(ValidationError, match="not a host name"):
        api_settings("sqlite://", allowed_hosts="http://x.example")
