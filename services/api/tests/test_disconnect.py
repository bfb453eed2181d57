"""A client that goes away mid-request is not a server error.

Found by the fault-injection suite: a Celery pool process killed while sending its
status report left the api logging "Exception in ASGI application" and counting a
500 for the callback route.
"""

from __future__ import annotations

import secrets
import socket
from pathlib import Path

import pytest
from starlette.types import Message

from tasklab_api.config import Settings
from tasklab_api.main import create_app
from tasklab_api.migrate import upgrade


def settings(db_url: str) -> Settings:
    """Settings with a broker address where nothing listens (no broker needed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return Settings.model_validate(
        {
            "rmq_url": f"amqp://nobody:nothing@127.0.0.1:{port}/",
            "callback_secret": secrets.token_urlsafe(24),
            "database_url": db_url,
            "broker_connect_timeout": 0.3,
            "allowed_hosts": "testserver",
        }
    )


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path}/api.db"
    upgrade(url)
    return url


async def test_callback_from_a_client_that_disconnects_is_400(db_url: str) -> None:
    app = create_app(settings(db_url))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/update_task_status_api/",
        "raw_path": b"/update_task_status_api/",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json"), (b"content-length", b"100")],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8080),
    }
    sent: list[Message] = []

    chunks: list[Message] = [{"type": "http.request", "body": b'{"task_id": ', "more_body": True}]

    async def receive() -> Message:
        # Part of the body, then the connection is gone (what uvicorn tells the app).
        return chunks.pop(0) if chunks else {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    async with app.router.lifespan_context(app):
        await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    assert start["status"] == 400
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    assert b"client disconnected" in body
