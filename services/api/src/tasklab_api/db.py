"""Database engine and sessions (SQLAlchemy 2, async).

``DATABASE_URL`` takes the usual forms, ``sqlite:///path/to/file.db`` or
``postgresql://user:password@host/db``; the async driver is chosen here
(aiosqlite, psycopg 3).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

import sqlalchemy
from sqlalchemy import event
from sqlalchemy.engine import URL, Engine, make_url
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
        if url.database not in (None, "", ":memory:") and "poolclass" not in kwargs:
            # One connection. The task store writes on its own writer thread
            # (create_sync_engine) and reads here; a second writer on this engine
            # would sleep in SQLite's busy handler (up to 100 ms a time) instead of
            # being woken when the lock is free.
            kwargs.setdefault("pool_size", 1)
            kwargs.setdefault("max_overflow", 0)
        engine = create_async_engine(url, connect_args=dict(SQLITE_CONNECT), **kwargs)
        _sqlite_pragmas(engine.sync_engine)
        return engine
    return create_async_engine(
        url, pool_size=10, max_overflow=10, **_postgres_engine_args(url), **kwargs
    )


def create_sync_engine(url: URL, *, pool_size: int) -> Engine:
    """The database of an async engine's ``url``, through the synchronous driver
    (pysqlite, psycopg 3).

    For the task store's writer threads; SQLite gets the same pragmas as the async
    engine. An in-memory SQLite database cannot be shared between engines.
    """
    if is_sqlite(url):
        if url.database in (None, "", ":memory:"):
            raise ValueError("the task store needs a SQLite file, not an in-memory database")
        engine = sqlalchemy.create_engine(
            url.set(drivername="sqlite+pysqlite"),
            connect_args={**SQLITE_CONNECT, "check_same_thread": False},
            pool_size=pool_size,
            max_overflow=0,
        )
        _sqlite_pragmas(engine)
        return engine
    return sqlalchemy.create_engine(
        url, pool_size=pool_size, max_overflow=0, **_postgres_engine_args(url)
    )


#: SQLite: seconds a connection waits for a lock before "database is locked".
SQLITE_CONNECT: Final[dict[str, Any]] = {"timeout": 30}


def _postgres_engine_args(url: URL) -> dict[str, Any]:
    """Pool and connection settings of every PostgreSQL engine of the api."""
    return {
        "pool_pre_ping": True,
        "pool_timeout": POOL_TIMEOUT,
        "connect_args": postgres_connect_args(url),
    }


#: Seconds to wait for a free pooled connection before the request fails.
POOL_TIMEOUT = 10
#: Server-side limits of every api session (milliseconds): no statement, lock wait or
#: forgotten transaction can hold a connection (and the rows it locks) for long.
PG_SESSION_OPTIONS = (
    "-c statement_timeout=15000 -c lock_timeout=10000 -c idle_in_transaction_session_timeout=60000"
)


def postgres_connect_args(url: URL) -> dict[str, Any]:
    """libpq settings bounding how long the api waits on PostgreSQL.

    A connection attempt gives up after 5 s; TCP keepalives and ``tcp_user_timeout``
    notice a peer that vanished within about 20 s. ``options`` in ``DATABASE_URL``
    replace the session limits.
    """
    args: dict[str, Any] = {
        "connect_timeout": 5,
        "keepalives": 1,
        "keepalives_idle": 10,
        "keepalives_interval": 5,
        "keepalives_count": 3,
        "tcp_user_timeout": 20000,
    }
    if "options" not in url.query:
        args["options"] = PG_SESSION_OPTIONS
    return args


def _sqlite_pragmas(engine: Engine) -> None:
    """SQLite: WAL, and BEGIN IMMEDIATE so read-then-write transactions never deadlock
    (sessions that only read: a plain BEGIN, see :data:`READ_ONLY`)."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        if conn.get_execution_options().get(READ_ONLY):
            conn.exec_driver_sql("BEGIN")  # a WAL snapshot: neither waits for nor blocks writers
        else:
            conn.exec_driver_sql("BEGIN IMMEDIATE")


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


#: Execution option of sessions that only read. On SQLite their transactions start
#: with a plain (deferred) BEGIN instead of BEGIN IMMEDIATE, so that a read never takes
#: the write lock: with WAL it reads a snapshot while the store's writer commits.
READ_ONLY = "tasklab_read_only"


def engine_of(sessions: async_sessionmaker[AsyncSession]) -> AsyncEngine:
    """The engine ``sessions`` are bound to."""
    bind = sessions.kw.get("bind")
    if not isinstance(bind, AsyncEngine):
        raise TypeError("the task store's sessions must be bound to an AsyncEngine")
    return bind


def read_session_factory(
    sessions: async_sessionmaker[AsyncSession],
) -> async_sessionmaker[AsyncSession]:
    """Sessions on the engine of ``sessions`` for transactions that never write."""
    engine = engine_of(sessions).execution_options(**{READ_ONLY: True})
    return async_sessionmaker(engine, expire_on_commit=False)
