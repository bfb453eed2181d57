"""``tasklab-api``: migrate the task store, then serve (the same command everywhere).

tasklab-api            migrate, then serve on API_HOST:API_PORT
tasklab-api migrate    only migrate (e.g. a Kubernetes init container)
tasklab-api serve --no-migrate
"""

from __future__ import annotations

import argparse
import socket
import sys

import uvicorn
from pydantic import ValidationError

from tasklab_api.config import Settings
from tasklab_api.events import EventHub
from tasklab_api.guard import guarded_protocol
from tasklab_api.migrate import upgrade
from tasklab_common.errors import validation_problems
from tasklab_common.settings import setup_logging


def _settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        # Only the names and the reasons: never the values (they may be secrets).
        problems = validation_problems(exc, settings=True, whole="settings")
        sys.exit(f"tasklab-api: invalid configuration: {problems}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="tasklab-api", description=__doc__.splitlines()[0])
    parser.add_argument("command", nargs="?", choices=["serve", "migrate"], default="serve")
    parser.add_argument("--no-migrate", action="store_true", help="serve without migrating")
    args = parser.parse_args(argv)

    settings = _settings()
    setup_logging(settings)
    if args.command == "migrate" or not args.no_migrate:
        upgrade(settings.database_url)
    if args.command == "migrate":
        return
    config = uvicorn.Config(
        "tasklab_api.main:create_app",
        factory=True,
        host=settings.api_host,
        port=settings.api_port,
        log_config=None,
        proxy_headers=bool(settings.forwarded_allow_ips),
        forwarded_allow_ips=settings.forwarded_allow_ips or None,
        timeout_graceful_shutdown=settings.shutdown_timeout,
        # What one client can make the server hold (see tasklab_api.guard).
        http=guarded_protocol(
            settings.max_header_bytes, settings.header_timeout, settings.body_timeout
        ),
        limit_concurrency=settings.max_connections,
    )
    server = Server(config)
    server.run(sockets=_listeners(config, settings))
    if not server.started:
        sys.exit(3)  # as uvicorn.run: the app did not start


def _listeners(config: uvicorn.Config, settings: Settings) -> list[socket.socket] | None:
    """The public and the internal port's sockets (API_INTERNAL_PORT), served by one
    server (tasklab_api.internalport splits the routes); None: the one port of config."""
    if settings.api_internal_port is None:
        return None
    internal = uvicorn.Config(config.app, host=config.host, port=settings.api_internal_port)
    return [config.bind_socket(), internal.bind_socket()]


class Server(uvicorn.Server):
    """uvicorn's server, ending live streams and sync waits as soon as it stops.

    On SIGTERM uvicorn stops accepting connections, then waits for the open ones up
    to ``SHUTDOWN_TIMEOUT``. A live stream never ends by itself and a sync wait may
    outlast that; both are ended first: the stream closes cleanly (the page
    reconnects to another api), a sync request is answered 504 with its task, which
    runs on and can be polled. Other requests finish normally.
    """

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for hub in list(EventHub.instances):
            hub.begin_shutdown()
        await super().shutdown(sockets)


if __name__ == "__main__":
    main()
