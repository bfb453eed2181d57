from __future__ import annotations

import secrets
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tasklab_api.config import Settings
from tasklab_api.db import create_engine, is_sqlite, normalize_url, session_factory
from tasklab_api.main import create_app
from tasklab_api.migrate import upgrade
from tasklab_api.store import TaskStore
from tasklab_devtools.pg import temp_database

SECRET = secrets.token_urlsafe(24)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A migrated, empty task store on SQLite and on the local PostgreSQL."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/tasks.db"
        upgrade(url)
        yield url
        return
    with temp_database() as url:
        upgrade(url)
        yield url


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[TaskStore]:
    engine = create_engine(db_url)
    store = TaskStore(session_factory(engine), postgres=not is_sqlite(normalize_url(db_url)))
    yield store
    store.close()
    await engine.dispose()


def make_settings(db_url: str, **overrides: object) -> Settings:
    """Settings with a broker address where nothing listens (no broker needed)."""
    values: dict[str, object] = {
        "rmq_url": f"amqp://nobody:nothing@127.0.0.1:{free_port()}/",
        "callback_secret": SECRET,
        "database_url": db_url,
        "broker_connect_timeout": 0.3,
        "allowed_hosts": "testserver",  # the Host TestClient sends
        **overrides,
    }
    return Settings.model_validate(values)


@pytest.fixture
def secret() -> str:
    return SECRET


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    url = f"sqlite:///{tmp_path}/api.db"
    upgrade(url)
    with TestClient(create_app(make_settings(url, max_body_bytes=4096))) as c:
        yield c
