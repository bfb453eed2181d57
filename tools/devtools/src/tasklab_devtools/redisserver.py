"""A private Redis server (Debian's ``redis-server``) for the benchmark's Celery peer.

Like a private RabbitMQ node: its own data directory, a free port on 127.0.0.1 only,
a password generated for the run (``requirepass``), no persistence (no snapshot, no
append-only file), stopped with the block that started it. Nothing of the machine's
own Redis (if any) is used or touched.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

from tasklab_devtools.debian import ensure_package
from tasklab_devtools.procs import ManagedProcess, free_port

__all__ = ["RedisServer", "ensure_redis_server", "ping", "private_redis", "redis_server_path"]


def redis_server_path() -> Path | None:
    """The ``redis-server`` binary, or None when Redis is not installed."""
    found = shutil.which("redis-server") or shutil.which("redis-server", path="/usr/bin")
    return Path(found) if found else None


def ensure_redis_server() -> None:
    """Make sure ``redis-server`` is installed (apt as root, else RuntimeError with how)."""
    ensure_package("redis-server", lambda: redis_server_path() is not None)


def _command(*parts: str) -> bytes:
    """One command in Redis's protocol (RESP): an array of bulk strings."""
    out = [f"*{len(parts)}\r\n".encode()]
    for part in parts:
        data = part.encode()
        out.append(f"${len(data)}\r\n".encode() + data + b"\r\n")
    return b"".join(out)


def ping(port: int, password: str, timeout: float = 2.0) -> bool:
    """Whether a Redis server on 127.0.0.1:``port`` takes ``password`` and answers PING."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(_command("AUTH", password) + _command("PING"))
            answer = b""
            while answer.count(b"\r\n") < 2:
                chunk = sock.recv(256)
                if not chunk:
                    break
                answer += chunk
    except OSError:
        return False
    return answer.startswith(b"+OK\r\n+PONG\r\n")


class RedisServer:
    """A Redis server whose files live in ``base_dir``, on 127.0.0.1:``port``."""

    def __init__(self, base_dir: Path, port: int | None = None) -> None:
        self.base_dir = Path(base_dir).absolute()
        self.port = port or free_port()
        self.password = secrets.token_urlsafe(24)
        self._proc: ManagedProcess | None = None

    @property
    def pid(self) -> int | None:
        """The server's pid while it runs."""
        return self._proc.pid if self._proc is not None and self._proc.running() else None

    def url(self, db: int = 0) -> str:
        """``redis://:PASSWORD@127.0.0.1:PORT/DB``."""
        return f"redis://:{quote(self.password, safe='')}@127.0.0.1:{self.port}/{db}"

    def start(self, timeout: float = 30) -> None:
        """Start the server and wait until it answers an authenticated PING."""
        binary = redis_server_path()
        if binary is None:
            raise RuntimeError("redis-server is not installed (see ensure_redis_server)")
        self.base_dir.mkdir(parents=True, exist_ok=True)
        # The password in a file of its own, not on the command line (ps shows that).
        config = self.base_dir / "redis.conf"
        config.touch(mode=0o600)
        config.write_text(
            "\n".join(
                [
                    "bind 127.0.0.1",
                    f"port {self.port}",
                    "protected-mode yes",
                    f"dir {self.base_dir}",
                    'save ""',
                    "appendonly no",
                    "daemonize no",
                    'logfile ""',
                    f"requirepass {self.password}",
                ]
            )
            + "\n"
        )
        self._proc = ManagedProcess(
            "redis", [str(binary), str(config)], {}, log_path=self.base_dir / "redis.log"
        )
        self._proc.start()
        deadline = time.monotonic() + timeout
        while not ping(self.port, self.password):
            if not self._proc.running():
                raise RuntimeError(f"redis-server exited:\n{self._proc.log_tail()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"redis-server did not answer within {timeout:g} s")
            time.sleep(0.1)

    def stop(self) -> None:
        """Stop the server (no process left) and remove its directory."""
        if self._proc is not None:
            self._proc.terminate(10)
            self._proc = None
        shutil.rmtree(self.base_dir, ignore_errors=True)


@contextlib.contextmanager
def private_redis(base_dir: Path) -> Iterator[RedisServer]:
    """A started private Redis server (installing Redis first if needed); stopped at exit."""
    ensure_redis_server()
    server = RedisServer(base_dir)
    try:
        server.start()
        yield server
    finally:
        server.stop()
