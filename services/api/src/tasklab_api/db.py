"""Database engine and sessions (SQLAlchemy 2, async).

``DATABASE_URL`` takes the usual forms, ``sqlite:///path/to/file.db`` or
``postgresql://user:password@host/db``; the async driver is chosen here
(aiosqlite, psycopg 3).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.ext.asyncio import AsyncSession as AsyncSession


def normalize_url(raw: str) -> URL:
    """The async SQLAlchemy URL for a user-facing ``DATABASE_URL``."""
    url = make_url(raw)
    backend = url.get_backend_name()
    if backend == "sqlite":
        url = url.set(drivername="sqlite+aiosqlite")
        if url.database and url.database != ":memory:":
            Path(url.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    elif backend in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+psycopg")
    else:
        raise ValueError(f"DATABASE_URL: unsupported database {backend!r} (sqlite or postgresql)")
    return url


def is_sqlite(url: URL) -> bool:
    return url.get_backend_name() == "sqlite"


def libpq_conninfo(url: URL) -> str:
    """A libpq connection string for a PostgreSQL URL (for LISTEN)."""
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def create_engine(raw_url: str, **kwargs: Any) -> AsyncEngine:
    url = normalize_url(raw_url)
    if is_sqlite(url):
        engine = create_async_engine(url, connect_args={"timeout": 30}, **kwargs)
        _sqlite_serializable(engine)
        return engine
    return create_async_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10, **kwargs)


def _sqlite_serializable(engine: AsyncEngine) -> None:
    """SQLite: WAL, and BEGIN IMMEDIATE so read-then-write transactions never deadlock."""

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)
