"""API_INTERNAL_PORT: the workers' signed routes on a port of their own, the real server.

``tasklab-api serve`` listens on both ports; the routes are split by the port each
connection came in on, so no header can move a request from one side to the other.
"""

from __future__ import annotations

import importlib
import json
import os
import pkgutil
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import httpx
import pytest
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from pydantic import ValidationError

from tasklab_api import routers
from tasklab_api.config import Settings
from tasklab_api.internalport import InternalPortMiddleware
from tasklab_api.main import create_app
from tasklab_api.signing import signed_body
from tasklab_common.messages import UNKNOWN_TASK_HEADER, StatusUpdate
from tasklab_common.settings import CALLBACK_PATH, HOUSEKEEPING_PATH
from tasklab_common.signing import sign_headers
from tasklab_devtools.procs import ManagedProcess, free_port, wait_http_ok
from tasklab_devtools.stack import venv_command
from tasklab_devtools.testing.apisettings import api_settings

SECRET = secrets.token_urlsafe(24)


def _serve(tmp_path: Path, name: str, **env: str) -> ManagedProcess:
    process = ManagedProcess(
        name,
        [venv_command("tasklab-api"), "serve"],
        {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "RMQ_URL": f"amqp://nobody:nothing@127.0.0.1:{free_port()}/",
            "BROKER_CONNECT_TIMEOUT": "0.3",
            "CALLBACK_SECRET": SECRET,
            "DATABASE_URL": f"sqlite:///{tmp_path}/{name}.db",
            "API_HOST": "127.0.0.1",
            **env,
        },
        cwd=tmp_path,  # no .env here
        log_path=tmp_path / f"{name}.log",
    )
    process.start()
    return process


@pytest.fixture(scope="module")
def ports(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(public base URL, internal base URL) of one api serving both."""
    public, internal = free_port(), free_port()
    tmp_path = tmp_path_factory.mktemp("internalport")
    process = _serve(tmp_path, "api", API_PORT=str(public), API_INTERNAL_PORT=str(internal))
    try:
        wait_http_ok(f"http://127.0.0.1:{public}/healthz", 60, process=process)
        yield f"http://127.0.0.1:{public}", f"http://127.0.0.1:{internal}"
    finally:
        process.terminate()


def _signed(base: str, path: str, body: bytes) -> httpx.Response:
    headers = {"Content-Type": "application/json", **sign_headers(SECRET, body)}
    return httpx.post(base + path, content=body, headers=headers, timeout=10)


def test_the_signed_routes_answer_on_the_internal_port(ports: tuple[str, str]) -> None:
    _, internal = ports
    body = StatusUpdate(task_id="t-unknown", status="DONE").model_dump_json().encode()
    unknown = _signed(internal, CALLBACK_PATH, body)
    assert unknown.status_code == 404  # the route itself: an authentic report, unknown task
    assert unknown.headers[UNKNOWN_TASK_HEADER] == "1"
    done = _signed(internal, HOUSEKEEPING_PATH, b'{"requested_by": "celery@w1"}')
    assert done.status_code == 200, done.text
    assert set(done.json()) == {"stuck_failed", "orphans_failed", "purged_tasks", "purged_events"}
    # An unsigned request reaches the route too, which refuses it as before.
    unsigned = httpx.post(internal + HOUSEKEEPING_PATH, json={"requested_by": "x"}, timeout=10)
    assert unsigned.status_code == 401, unsigned.text


def test_the_public_port_refuses_the_signed_routes(ports: tuple[str, str]) -> None:
    """Even correctly signed: a pod that may reach only the public port (the whole
    namespace may) gets nowhere with a stolen or replayed signature."""
    public, _ = ports
    body = StatusUpdate(task_id="t-unknown", status="DONE").model_dump_json().encode()
    for path, payload in ((CALLBACK_PATH, body), (HOUSEKEEPING_PATH, b'{"requested_by": "x"}')):
        resp = _signed(public, path, payload)
        assert resp.status_code == 404, resp.text
        assert resp.json() == {"detail": "served on the api's internal port only"}
        assert UNKNOWN_TASK_HEADER not in resp.headers
    # The rest of the api is where it was.
    assert httpx.get(public + "/healthz", timeout=10).status_code == 200
    assert httpx.get(public + "/api/tasks", timeout=10).status_code == 200


def test_the_internal_port_serves_nothing_else(ports: tuple[str, str]) -> None:
    _, internal = ports
    for path in ("/", "/healthz", "/api/tasks", "/metrics", "/docs"):
        resp = httpx.get(internal + path, timeout=10)
        assert resp.status_code == 404, (path, resp.text)
        assert json.loads(resp.text) == {
            "detail": "only the workers' signed routes are served on this port"
        }
    # Nor a submission.
    resp = httpx.post(internal + "/api/tasks", json={"method": "celery", "duration": 1})
    assert resp.status_code == 404


def test_without_an_internal_port_everything_is_on_one(tmp_path: Path) -> None:
    port = free_port()
    process = _serve(tmp_path, "one-port", API_PORT=str(port))
    try:
        base = f"http://127.0.0.1:{port}"
        wait_http_ok(f"{base}/healthz", 60, process=process)
        assert _signed(base, HOUSEKEEPING_PATH, b'{"requested_by": "celery@w1"}').status_code == 200
    finally:
        process.terminate()


def test_the_two_ports_must_differ() -> None:
    with pytest.raises(ValidationError, match="API_INTERNAL_PORT must differ from API_PORT"):
        Settings.model_validate(
            {
                "rmq_url": "amqp://u:p@127.0.0.1/",
                "callback_secret": SECRET,
                "api_port": 8080,
                "api_internal_port": 8080,
            }
        )


def _uses_signed_body(dependant: Dependant) -> bool:
    return any(dep.call is signed_body or _uses_signed_body(dep) for dep in dependant.dependencies)


def test_the_internal_port_serves_exactly_the_signed_routes(tmp_path: Path) -> None:
    """The paths the internal port alone serves are exactly those of the routes (of
    every router) that take a SignedBody, and the status callback (served by its own
    endpoint, which checks the same signature): the paths the workers call."""
    signed = {CALLBACK_PATH}
    for module in pkgutil.iter_modules(routers.__path__):
        router = importlib.import_module(f"{routers.__name__}.{module.name}").router
        signed |= {
            route.path
            for route in router.routes
            if isinstance(route, APIRoute) and _uses_signed_body(route.dependant)
        }
    assert signed == {CALLBACK_PATH, HOUSEKEEPING_PATH}
    settings = api_settings(f"sqlite:///{tmp_path}/tasks.db", api_internal_port=free_port())
    app = create_app(settings)
    (split,) = [m for m in app.user_middleware if cast(object, m.cls) is InternalPortMiddleware]
    assert split.kwargs == {"internal_port": settings.api_internal_port, "signed_paths": signed}
