"""``tasklab-dev`` (what ``make dev`` runs): the whole system locally, in the foreground.

Run it from the repository root. It

1. reads ``.env`` (creating it if needed), keeping existing values and adding the
   missing ones: a random ``CALLBACK_SECRET``, ``DATABASE_URL`` (SQLite under
   ``.dev/``) and ``API_URL``. Environment variables override ``.env``;
2. uses the broker of ``RMQ_URL`` if it accepts a login, or else starts a private
   RabbitMQ node ``tasklab-dev@localhost`` with its data in ``.dev/rabbitmq`` (AMQP
   5673, management 15673, prometheus 15693, distribution 25673; override with
   ``DEV_RMQ_PORT``, ``DEV_RMQ_MGMT_PORT``, ``DEV_RMQ_PROMETHEUS_PORT``,
   ``DEV_RMQ_DIST_PORT``) and writes its ``RMQ_URL`` (with the generated password) to
   ``.env``, so the next run reuses the node's data and credentials;
3. runs the api (port 8080), a Celery worker (concurrency 3), the consumer and the
   Celery beat (housekeeping, schedule state in ``.dev/``) with prefixed output (also
   written per service to ``.dev/logs/<service>.log``: ``make logs SERVICE=...``) until
   Ctrl-C or until one of them dies, then stops everything, the private node included.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import secrets
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import IO
from urllib.parse import unquote, urlsplit

from tasklab_common.settings import CALLBACK_PATH
from tasklab_devtools.devlogs import LOG_DIR
from tasklab_devtools.prometheus import LocalPrometheus
from tasklab_devtools.rabbitmq import (
    AmqpLoginError,
    RabbitNode,
    check_amqp_login,
    ensure_rabbitmq_server,
)
from tasklab_devtools.stack import LocalStack, StackConfig
from tasklab_devtools.uiassets import ensure as ensure_ui_assets

__all__ = ["main", "read_dotenv", "update_dotenv"]

DEV_NODE_NAME = "tasklab-dev@localhost"
DEFAULT_DATABASE_URL = "sqlite:///.dev/tasklab.db"
_NODE_PORTS = {
    "DEV_RMQ_PORT": 5673,
    "DEV_RMQ_MGMT_PORT": 15673,
    "DEV_RMQ_PROMETHEUS_PORT": 15693,
    "DEV_RMQ_DIST_PORT": 25673,
}


# ------------------------------------------------------------------ .env


def _parse_line(line: str) -> tuple[str, str] | None:
    stripped = line.strip()
    if not stripped or stripped.startswith("#") or "=" not in stripped:
        return None
    key, value = stripped.removeprefix("export ").split("=", 1)
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        value = value[1:-1]
    return key.strip(), value


def read_dotenv(path: Path) -> dict[str, str]:
    """``KEY=VALUE`` pairs of a ``.env`` file ({} if it does not exist)."""
    if not path.exists():
        return {}
    pairs = (_parse_line(line) for line in path.read_text().splitlines())
    return dict(pair for pair in pairs if pair is not None)


def update_dotenv(path: Path, values: dict[str, str]) -> None:
    """Set ``values`` in a ``.env`` file: replaced in place, or appended; file mode 0600."""
    if not values:
        return
    lines = path.read_text().splitlines() if path.exists() else []
    todo = dict(values)
    for index, line in enumerate(lines):
        pair = _parse_line(line)
        if pair is not None and pair[0] in todo:
            lines[index] = f"{pair[0]}={todo.pop(pair[0])}"
    lines += [f"{key}={value}" for key, value in todo.items()]
    path.touch(mode=0o600)
    path.chmod(0o600)
    path.write_text("\n".join(lines) + "\n")


# ------------------------------------------------------------------ broker


def _say(message: str) -> None:
    print(f"[dev] {message}", file=sys.stderr, flush=True)


def _is_node_url(url: str, amqp_port: int) -> bool:
    """Whether ``url`` points at the private node's AMQP port on this machine."""
    parts = urlsplit(url)
    return parts.hostname in ("127.0.0.1", "localhost") and parts.port == amqp_port


def _private_node(settings: dict[str, str], root: Path) -> RabbitNode:
    """The dev node, reusing the credentials of ``RMQ_URL`` when it points at it."""
    ports = {key: int(settings.get(key, default)) for key, default in _NODE_PORTS.items()}
    url = settings.get("RMQ_URL", "")
    user, password = "tasklab", None
    if url and _is_node_url(url, ports["DEV_RMQ_PORT"]):
        parts = urlsplit(url)
        user = unquote(parts.username or user)
        password = unquote(parts.password) if parts.password else None
    return RabbitNode(
        DEV_NODE_NAME,
        root / ".dev" / "rabbitmq",
        ports["DEV_RMQ_PORT"],
        ports["DEV_RMQ_MGMT_PORT"],
        ports["DEV_RMQ_PROMETHEUS_PORT"],
        ports["DEV_RMQ_DIST_PORT"],
        user=user,
        password=password,
    )


def _broker(
    settings: dict[str, str], dotenv: dict[str, str], env_file: Path, start_allowed: bool
) -> tuple[str, RabbitNode | None]:
    """The broker URL to use, and the private node when this run started one."""
    node = _private_node(settings, env_file.parent)
    url = settings.get("RMQ_URL")
    if url and (not _is_node_url(url, node.amqp_port) or not start_allowed):
        try:
            check_amqp_login(url)
        except (OSError, ValueError, AmqpLoginError) as exc:
            if not start_allowed:
                raise RuntimeError(f"the broker of RMQ_URL does not accept a login: {exc}") from exc
            _say(f"the broker of RMQ_URL does not accept a login ({exc}); starting a private node")
        else:
            return url, None
    elif not start_allowed:
        raise RuntimeError("--no-broker-start needs RMQ_URL (environment or .env)")

    ensure_rabbitmq_server()
    env_url = dotenv.get("RMQ_URL")
    if env_url is None or _is_node_url(env_url, node.amqp_port):
        update_dotenv(env_file, {"RMQ_URL": node.amqp_url})
    else:
        _say("RMQ_URL in .env is left unchanged; the services use the private node")
    _say(f"starting RabbitMQ node {node.name} (data in {node.base_dir})")
    node.start()
    _say(f"RabbitMQ node ready in {node.start_seconds:.1f} s")
    return node.amqp_url, node


# ------------------------------------------------------------------ main


def _banner(
    cfg: StackConfig, node: RabbitNode | None, prometheus: LocalPrometheus | None = None
) -> str:
    ui = f"http://localhost:{cfg.api_port}"
    if node is not None:
        broker = (
            f"http://localhost:{node.mgmt_port}  "
            f"(user {node.user}, password: the one in RMQ_URL in .env)"
        )
    else:
        parts = urlsplit(cfg.rmq_url)
        broker = f"the broker of RMQ_URL ({parts.hostname}:{parts.port or 5672})"
    rows = [
        ("Web UI", ui),
        ("API docs", f"{ui}/docs"),
        ("RabbitMQ", broker),
        ("Celery", "uv run celery -A celery_app inspect registered   (from the repo root)"),
        (
            "Logs",
            "make logs SERVICE=celery-worker   (or api, consumer, celery-beat; all: make logs)",
        ),
        *(
            [("Prometheus", f"{prometheus.url}  (metrics of the api and the broker)")]
            if prometheus is not None
            else []
        ),
        ("Stop", "Ctrl-C"),
    ]
    body = "\n".join(f"  {label:<10} {value}" for label, value in rows)
    return f"\ntasklab is running:\n{body}\n"


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def hold_instance_lock(path: Path) -> IO[str] | None:
    """An exclusive lock on ``path`` held until the process ends (the open file is
    returned: keep it); None when another process holds it."""
    handle = path.open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    handle.truncate(0)
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def make_private(state: Path, *files: Path) -> None:
    """``state`` (created if missing) and everything in it, and ``files``: owner only."""
    state.mkdir(mode=0o700, exist_ok=True)
    state.chmod(0o700)
    for folder, dirs, names in os.walk(state):
        for name in dirs:
            (Path(folder) / name).chmod(0o700)
        for name in names:
            path = Path(folder) / name
            if not path.is_symlink():
                path.chmod(0o600)
    for path in files:
        if path.exists():
            path.chmod(0o600)


def main(argv: list[str] | None = None) -> int:
    """Run the local stack in the foreground; the process exit code."""
    parser = argparse.ArgumentParser(
        prog="tasklab-dev",
        description="Run tasklab locally (api, Celery worker, consumer, RabbitMQ) until Ctrl-C.",
    )
    parser.add_argument(
        "--no-broker-start",
        action="store_true",
        help="never start a private RabbitMQ node; RMQ_URL must accept a login",
    )
    parser.add_argument(
        "--monitoring",
        action="store_true",
        help="also run a local Prometheus (port PROMETHEUS_PORT, 9090) scraping the stack",
    )
    args = parser.parse_args(argv)

    root = Path.cwd()
    env_file = root / ".env"
    dotenv = read_dotenv(env_file)
    settings = {**dotenv, **os.environ}
    api_port = int(settings.get("API_PORT", "8080"))
    missing = {
        "CALLBACK_SECRET": secrets.token_urlsafe(32),
        "DATABASE_URL": DEFAULT_DATABASE_URL,
        "API_URL": f"http://localhost:{api_port}{CALLBACK_PATH}",
    }
    missing = {key: value for key, value in missing.items() if key not in settings}
    # The state (database, broker data with the user's password hash, logs) and .env
    # (the callback secret) are the user's alone: 0700 folders, 0600 files, also for
    # what the services create (they inherit the umask).
    os.umask(0o077)
    update_dotenv(env_file, missing)
    settings.update(missing)
    make_private(root / ".dev", env_file)
    # One make dev per checkout: a second one would take the first one's broker for a
    # leftover and stop it, then fail on the port in use, leaving the first broken.
    instance = hold_instance_lock(root / ".dev" / "dev.lock")
    if instance is None:
        _say(
            "tasklab is already running from this folder (another make dev): use it, or "
            "stop it first (Ctrl-C in its terminal)"
        )
        return 1

    signal.signal(signal.SIGTERM, _interrupt)
    node: RabbitNode | None = None
    stack: LocalStack | None = None
    prometheus: LocalPrometheus | None = None
    try:
        try:
            ensure_ui_assets()  # the UI's chart library (npm), when its lockfile changed
        except RuntimeError as exc:  # the board works without it, its charts off
            _say(f"warning: {exc}; until then the board shows no charts")
        rmq_url, node = _broker(settings, dotenv, env_file, not args.no_broker_start)
        if "RMQ_URL" in os.environ and os.environ["RMQ_URL"] != rmq_url:
            _say("note: RMQ_URL in your shell overrides .env for the celery command below")
        cfg = StackConfig(
            rmq_url=rmq_url,
            database_url=settings["DATABASE_URL"],
            callback_secret=settings["CALLBACK_SECRET"],
            api_port=api_port,
            api_host=settings.get("API_HOST", "127.0.0.1"),
            consumer_concurrency=int(settings.get("CONSUMER_CONCURRENCY", "3")),
            rmq_management_url=(
                node.management_url if node is not None else settings.get("RMQ_MANAGEMENT_URL")
            ),
            cwd=root,
            beat_schedule=root / ".dev" / "celerybeat-schedule",
            log_copy_dir=root / LOG_DIR,  # what make logs follows
        )
        stack = LocalStack(cfg)
        stack.start(beat=True)
        if args.monitoring:
            prometheus = LocalPrometheus(
                base_dir=root / ".dev" / "prometheus",
                api_url=cfg.api_base_url,
                broker_prometheus_url=node.prometheus_url if node is not None else None,
                port=int(settings.get("PROMETHEUS_PORT", "9090")),
                interval="5s",
            )
            prometheus.start()
        print(_banner(cfg, node, prometheus), flush=True)
        return stack.supervisor.run_forever()
    except KeyboardInterrupt:
        return 0
    except (RuntimeError, ValueError) as exc:
        _say(f"error: {exc}")
        return 1
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
        if prometheus is not None:
            prometheus.stop()
        if stack is not None:
            stack.stop()
        if node is not None:
            _say(f"stopping RabbitMQ node {node.name}")
            node.stop()


if __name__ == "__main__":
    sys.exit(main())
