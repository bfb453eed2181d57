"""The api's settings for in-process tests: no broker is needed (its address is a free
local port where nothing listens), the Host header ``TestClient`` sends is allowed."""

from __future__ import annotations

import secrets
import socket

from tasklab_api.config import Settings

__all__ = ["api_settings", "nowhere_amqp_url"]


def nowhere_amqp_url() -> str:
    """An AMQP URL of a free local port: every connection to it is refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"amqp://nobody:nothing@127.0.0.1:{port}/"


def api_settings(db_url: str, *, secret: str | None = None, **overrides: object) -> Settings:
    """Settings of an api on ``db_url`` (``secret``: the callback secret, default a
    fresh one); ``overrides`` as field names and values."""
    values: dict[str, object] = {
        "rmq_url": nowhere_amqp_url(),
        "callback_secret": secret or secrets.token_urlsafe(24),
        "database_url": db_url,
        "broker_connect_timeout": 0.3,
        "allowed_hosts": "testserver",  # the Host TestClient sends
        **overrides,
    }
    return Settings.model_validate(values)
