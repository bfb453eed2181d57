from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tasklab_api.db import create_engine, is_sqlite, normalize_url, session_factory
from tasklab_api.main import create_app
from tasklab_api.migrate import upgrade
from tasklab_api.store import TaskStore
from tasklab_devtools.pg import temp_database
from tasklab_devtools.testing.apisettings import api_settings

SECRET = secrets.token_urlsafe(24)


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


@pytest.fixture
def secret() -> str:
    return SECRET


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    url = f"sqlite:///{tmp_path}/api.db"
    upgrade(url)
    with TestClient(create_app(api_settings(url, secret=SECRET, max_body_bytes=4096))) as c:
        yield c
