"""Throwaway PostgreSQL databases for tests and the benchmark.

Nothing is assumed about the machine's own PostgreSQL cluster (a fresh Debian install
allows only password logins over TCP, and its passwords are not ours to know or
change): unless ``TASKLAB_TEST_PG_URL`` names a server where we may create databases,
the first caller starts a **private server** (:class:`PgServer`): a new cluster made
with ``initdb`` in a temporary folder, its superuser's password generated for this run
(scram-sha-256, no trust), listening on 127.0.0.1 on a free port only. It runs as the
``postgres`` system user when we are root (``initdb`` refuses root) and stops when the
Python process ends, taking its folder with it.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
from psycopg import sql

from tasklab_devtools.debian import ensure_package
from tasklab_devtools.procs import ManagedProcess, free_port

__all__ = ["PgServer", "admin_url", "ensure_postgres", "ensure_postgresql", "temp_database"]

#: The environment variable naming an existing server to use instead of a private one.
URL_ENV = "TASKLAB_TEST_PG_URL"
_SUPERUSER = "postgres"


def _bin_dir() -> Path:
    """The newest installed PostgreSQL's ``bin`` folder (Debian: /usr/lib/postgresql/N/bin)."""
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if found:
        return found[-1].parent
    initdb = shutil.which("initdb")
    if initdb is None:
        raise RuntimeError(
            "PostgreSQL is not installed (no initdb); install it with "
            "`apt-get install -y postgresql` (scripts/bootstrap.sh --test does), or point "
            f"{URL_ENV} at a server where this user may create databases"
        )
    return Path(initdb).parent


def ensure_postgresql() -> None:
    """Make sure PostgreSQL's binaries are installed (apt as root, else RuntimeError)."""

    def installed() -> bool:
        return any(Path("/usr/lib/postgresql").glob("*/bin/initdb")) or bool(shutil.which("initdb"))

    ensure_package("postgresql", installed)


class PgServer:
    """A private PostgreSQL server in ``base_dir`` (a cluster of its own, one port)."""

    def __init__(self, base_dir: Path, port: int | None = None) -> None:
        self.base_dir = base_dir
        self.port = port or free_port()
        self.password = secrets.token_urlsafe(24)
        self.data_dir = base_dir / "data"
        self._bin = _bin_dir()
        self._proc: ManagedProcess | None = None
        # As root, the server runs as the postgres system user (initdb refuses root).
        self._user = _SUPERUSER if os.geteuid() == 0 else None

    @property
    def url(self) -> str:
        """The superuser's URL, database ``postgres``."""
        return f"postgresql://{_SUPERUSER}:{self.password}@127.0.0.1:{self.port}/postgres"

    def _as_user(self, argv: list[str]) -> list[str]:
        if self._user is None:
            return argv
        account = pwd.getpwnam(self._user)
        return [
            "setpriv",
            f"--reuid={account.pw_uid}",
            f"--regid={account.pw_gid}",
            "--init-groups",
            "--",
            *argv,
        ]

    def _chown(self, path: Path) -> None:
        if self._user is not None:
            account = pwd.getpwnam(self._user)
            os.chown(path, account.pw_uid, account.pw_gid)

    def start(self, timeout: float = 60) -> None:
        """initdb, start the server and wait until it takes the superuser's login."""
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.base_dir.chmod(0o700)
        self._chown(self.base_dir)
        pwfile = self.base_dir / "pwfile"
        pwfile.write_text(self.password + "\n")
        pwfile.chmod(0o600)
        self._chown(pwfile)
        subprocess.run(
            self._as_user(
                [
                    str(self._bin / "initdb"),
                    "--pgdata",
                    str(self.data_dir),
                    "--username",
                    _SUPERUSER,
                    "--pwfile",
                    str(pwfile),
                    "--auth-host=scram-sha-256",
                    "--auth-local=scram-sha-256",
                    "--encoding=UTF8",
                    "--no-instructions",
                ]
            ),
            check=True,
            capture_output=True,
            timeout=120,
        )
        pwfile.unlink()
        argv = [
            str(self._bin / "postgres"),
            "-D",
            str(self.data_dir),
            "-p",
            str(self.port),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            f"unix_socket_directories={self.base_dir}",
            "-c",
            "max_connections=200",
        ]
        self._proc = ManagedProcess(
            "postgres", self._as_user(argv), dict(os.environ), log_path=self.base_dir / "log"
        )
        self._proc.start()
        deadline = time.monotonic() + timeout
        while True:
            try:
                psycopg.connect(self.url, connect_timeout=3).close()
                return
            except psycopg.OperationalError:
                if not self._proc.running():
                    raise RuntimeError(
                        f"the private PostgreSQL server exited:\n{self._proc.log_tail()}"
                    ) from None
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def stop(self) -> None:
        """Stop the server (a fast shutdown: SIGINT) and remove its folder."""
        if self._proc is not None:
            self._proc.kill(signal.SIGINT)  # PostgreSQL's "fast" shutdown
            self._proc.wait(30)
            self._proc.terminate(10)
            self._proc = None
        shutil.rmtree(self.base_dir, ignore_errors=True)


_server: PgServer | None = None
_server_lock = threading.Lock()


def _private_server() -> PgServer:
    """The process's private server, started on first use and stopped at exit."""
    global _server
    with _server_lock:
        if _server is None:
            server = PgServer(Path(tempfile.mkdtemp(prefix="tasklab-pg-")))
            try:
                server.start()
            except BaseException:
                server.stop()
                raise
            atexit.register(server.stop)
            _server = server
        return _server


def admin_url() -> str:
    """A superuser URL: ``TASKLAB_TEST_PG_URL``, else the private server's."""
    return os.environ.get(URL_ENV) or _private_server().url


def ensure_postgres(url: str | None = None, timeout: float = 30) -> None:
    """Wait until the server at ``url`` (default :func:`admin_url`) takes a login."""
    url = url or admin_url()
    deadline = time.monotonic() + timeout
    while True:
        try:
            psycopg.connect(url, connect_timeout=3).close()
            return
        except psycopg.OperationalError as exc:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"PostgreSQL is not reachable at {url.split('@')[-1]} ({exc}); "
                    f"point {URL_ENV} at a server where this user may create databases"
                ) from exc
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
