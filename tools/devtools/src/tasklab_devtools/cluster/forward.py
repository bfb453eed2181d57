"""Ports of the node on the host's loopback: what kind's port mappings do.

The node's network namespace has no link to the host (no veth: the host's network is
never changed), so the host reaches the node through this relay: it listens on
127.0.0.1 in the host's namespace, then moves itself into the node's namespace, where
every connection it makes to the node's address lands. It serves the apiserver (the
kubeconfig points here) and the NodePorts that ``deploy/kind/cluster.yaml`` publishes,
and exits when the node's namespace holder is gone.

    python -m tasklab_devtools.cluster.forward --holder PID 127.0.0.1:16443=10.88.0.2:6443 ...
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

from tasklab_devtools.cluster.netns import enter_netns

__all__ = ["main"]

_CHUNK = 64 * 1024


def _endpoint(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(_CHUNK):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        pass


_Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def _relay(target: tuple[str, int]) -> _Handler:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.wait_for(asyncio.open_connection(*target), 10)
        except (OSError, TimeoutError):
            writer.close()
            return
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        for w in (writer, up_writer):
            with contextlib.suppress(OSError):
                w.close()

    return handle


async def _holder_gone(holder: int) -> None:
    """Return once the namespace holder has exited (the node is down)."""
    gone = asyncio.Event()

    def check() -> None:
        if not Path(f"/proc/{holder}").exists():
            gone.set()
        else:
            asyncio.get_running_loop().call_later(2, check)

    check()
    await gone.wait()


async def _serve(holder: int, mappings: list[tuple[tuple[str, int], tuple[str, int]]]) -> None:
    listeners = []
    for (host, port), _ in mappings:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise SystemExit(f"forward: cannot listen on {host}:{port}: {exc.strerror}") from exc
        sock.listen(128)
        listeners.append(sock)
    # The listening sockets stay in the host's namespace; what is opened from here on
    # (the connections to the node) is in the node's.
    enter_netns(holder)
    servers = [
        await asyncio.start_server(_relay(target), sock=sock)
        for sock, (_, target) in zip(listeners, mappings, strict=True)
    ]
    print("forward: ready", flush=True)
    await _holder_gone(holder)
    for server in servers:
        server.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tasklab-cluster-forward", description=__doc__)
    parser.add_argument("--holder", type=int, required=True, help="pid of the namespace holder")
    parser.add_argument("mappings", nargs="+", help="LISTEN_HOST:PORT=NODE_HOST:PORT")
    args = parser.parse_args(argv)
    mappings = []
    for text in args.mappings:
        listen, _, target = text.partition("=")
        mappings.append((_endpoint(listen), _endpoint(target)))
    asyncio.run(_serve(args.holder, mappings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
