"""A real private Redis server: loopback only, its own password, nothing left after it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tasklab_devtools.redisserver import RedisServer, ping, private_redis, redis_server_path

pytestmark = pytest.mark.skipif(redis_server_path() is None, reason="redis-server is not installed")


def listening_addresses(port: int) -> set[str]:
    """Local addresses (hex, as in /proc/net/tcp*) listening on ``port``."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, hex_port = fields[1].split(":")
            if fields[3] == "0A" and int(hex_port, 16) == port:
                found.add(address)
    return found


def test_private_server_is_on_loopback_with_its_own_password(tmp_path: Path) -> None:
    base = tmp_path / "redis"
    with private_redis(base) as server:
        pid = server.pid
        assert pid is not None
        assert ping(server.port, server.password)
        assert not ping(server.port, "not-" + server.password)
        assert listening_addresses(server.port) == {"0100007F"}  # 127.0.0.1 only
        # The password is in the server's config file, not on its command line.
        assert server.password not in Path(f"/proc/{pid}/cmdline").read_text()
        assert server.url().endswith(f"@127.0.0.1:{server.port}/0")
        # No persistence: nothing is written to its directory while it runs.
        assert not list(base.glob("*.rdb")) and not list(base.glob("appendonly*"))
    assert not os.path.exists(f"/proc/{pid}")
    assert not base.exists()
    assert not ping(server.port, server.password)


def test_a_server_that_cannot_start_says_why(tmp_path: Path) -> None:
    first = RedisServer(tmp_path / "first")
    first.start()
    try:
        second = RedisServer(tmp_path / "second", port=first.port)  # the port is taken
        with pytest.raises(RuntimeError, match="redis-server exited"):
            second.start(timeout=20)
        second.stop()
    finally:
        first.stop()
