"""Throwaway PostgreSQL databases for tests, on the local server."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
from psycopg import sql

#: Admin connection used to create and drop test databases (override with
#: TASKLAB_TEST_PG_URL).
DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def admin_url() -> str:
    return os.environ.get("TASKLAB_TEST_PG_URL", DEFAULT_ADMIN_URL)


def ensure_postgres(url: str | None = None, timeout: float = 30) -> None:
    """Make sure the local PostgreSQL answers; start a stopped Debian cluster as root."""
    url = url or admin_url()
    try:
        psycopg.connect(url, connect_timeout=3).close()
        return
    except psycopg.OperationalError as exc:
        first_error = exc
    clusters = sorted(Path("/etc/postgresql").glob("*/main"))
    if os.geteuid() != 0 or not clusters or shutil.which("pg_ctlcluster") is None:
        raise RuntimeError(
            f"PostgreSQL is not reachable at {url} ({first_error}); start it, or point "
            "TASKLAB_TEST_PG_URL at a server where this user may create databases"
        )
    version = clusters[-1].parent.name
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "start"],
        check=False,
        capture_output=True,
    )
    deadline = time.monotonic() + timeout
    while True:
        try:
            psycopg.connect(url, connect_timeout=3).close()
            return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


@contextlib.contextmanager
def temp_database(prefix: str = "tasklab_test") -> Iterator[str]:
    """Create an empty database; yield its URL; drop it afterwards."""
    url = admin_url()
    ensure_postgres(url)
    name = f"{prefix}_{secrets.token_hex(4)}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    base, _, _ = url.rpartition("/")
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
