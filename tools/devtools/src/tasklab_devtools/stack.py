"""The local stack (api, Celery worker, consumer, beat) for ``make dev`` and the tests.

The processes are started with the same commands as in the container images (see
``docs/architecture.md``): ``tasklab-api``, ``celery -A celery_app worker ...`` and
``tasklab-consumer``, taken from the running virtual environment.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self

from tasklab_common.settings import CALLBACK_PATH
from tasklab_devtools.procs import ManagedProcess, Supervisor, wait_http_ok

__all__ = [
    "LocalStack",
    "StackConfig",
    "api_process",
    "beat_process",
    "celery_process",
    "consumer_process",
    "venv_command",
]

_WILDCARD_HOSTS = ("0.0.0.0", "::", "", "localhost")


@dataclass
class StackConfig:
    """What the services of one local stack share."""

    rmq_url: str
    database_url: str
    callback_secret: str
    api_port: int = 8080
    #: The api's port for the workers' signed routes (API_INTERNAL_PORT), which the
    #: workers then call; None: every route on api_port.
    api_internal_port: int | None = None
    #: A service's own RMQ_URL (by process name: api, celery-worker, consumer,
    #: celery-beat), as the chart gives each its own broker user; others use rmq_url.
    rmq_urls: dict[str, str] = field(default_factory=dict)
    api_host: str = "127.0.0.1"
    celery_concurrency: int = 3
    consumer_concurrency: int = 3
    #: Each process logs to ``log_dir/<name>.log``; None: prefixed lines on our stdout.
    log_dir: Path | None = None
    #: With prefixed lines on our stdout: each process's output also in
    #: ``log_copy_dir/<name>.log`` (``make dev``'s, for ``make logs``).
    log_copy_dir: Path | None = None
    #: Added last to the services' environment (overrides everything else).
    rmq_management_url: str | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    #: Working directory of the services (they read a ``.env`` there); None: ours.
    cwd: Path | None = None
    #: Where the Celery beat keeps its schedule state (``--schedule``).
    beat_schedule: Path | None = None

    @property
    def _client_host(self) -> str:
        return "127.0.0.1" if self.api_host in _WILDCARD_HOSTS else self.api_host

    @property
    def api_base_url(self) -> str:
        """Where clients reach the api, e.g. ``http://127.0.0.1:8080`` (no trailing /)."""
        return f"http://{self._client_host}:{self.api_port}"

    @property
    def api_callback_url(self) -> str:
        """The workers' status callback URL (``API_URL``): on the internal port if any."""
        if self.api_internal_port is None:
            return f"{self.api_base_url}{CALLBACK_PATH}"
        return f"http://{self._client_host}:{self.api_internal_port}{CALLBACK_PATH}"

    def env(self, service: str | None = None) -> dict[str, str]:
        """Environment of a service (by process name; None: the stack's common one):
        ours, then the stack's settings, then extra_env."""
        internal = self.api_internal_port
        return {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "RMQ_URL": self.rmq_urls.get(service or "", self.rmq_url),
            "API_URL": self.api_callback_url,
            "CALLBACK_SECRET": self.callback_secret,
            "DATABASE_URL": self.database_url,
            "API_HOST": self.api_host,
            "API_PORT": str(self.api_port),
            **({"API_INTERNAL_PORT": str(internal)} if internal is not None else {}),
            "CONSUMER_CONCURRENCY": str(self.consumer_concurrency),
            **({"RMQ_MANAGEMENT_URL": self.rmq_management_url} if self.rmq_management_url else {}),
            **self.extra_env,
        }

    def log_path(self, name: str) -> Path | None:
        """``log_dir/<name>.log``, or None when logging to stdout."""
        return None if self.log_dir is None else self.log_dir / f"{name}.log"

    def copy_path(self, name: str) -> Path | None:
        """``log_copy_dir/<name>.log`` when logging to stdout with a copy; else None."""
        if self.log_dir is not None or self.log_copy_dir is None:
            return None
        return self.log_copy_dir / f"{name}.log"


def venv_command(name: str) -> str:
    """A console script of the running virtual environment (next to ``sys.executable``).

    Falls back to ``PATH`` when it is not installed next to the interpreter.
    """
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} is neither next to {sys.executable} nor on PATH")
    return found


def api_process(cfg: StackConfig, name: str = "api", port: int | None = None) -> ManagedProcess:
    """The api (``tasklab-api``) on ``port`` (default ``cfg.api_port``)."""
    env = cfg.env("api")
    if port is not None:
        env["API_PORT"] = str(port)
    return ManagedProcess(
        name,
        [venv_command("tasklab-api")],
        env,
        cwd=cfg.cwd,
        log_path=cfg.log_path(name),
        copy_path=cfg.copy_path(name),
    )


def celery_process(
    cfg: StackConfig,
    name: str = "celery-worker",
    concurrency: int | None = None,
    node_name: str | None = None,
) -> ManagedProcess:
    """A Celery worker: ``celery -A celery_app worker --loglevel=info --concurrency=N``.

    ``node_name`` gives the worker the name ``NODE@<host>`` (``-n``), needed when
    several workers run on one machine; a name with its own ``@host`` is taken as is.
    """
    argv = [
        venv_command("celery"),
        "-A",
        "celery_app",
        "worker",
        "--loglevel=info",
        f"--concurrency={concurrency if concurrency is not None else cfg.celery_concurrency}",
    ]
    if node_name is not None:
        argv += ["-n", node_name if "@" in node_name else f"{node_name}@%h"]
    return ManagedProcess(
        name,
        argv,
        cfg.env("celery-worker"),
        cwd=cfg.cwd,
        log_path=cfg.log_path(name),
        copy_path=cfg.copy_path(name),
    )


def beat_process(cfg: StackConfig, name: str = "celery-beat") -> ManagedProcess:
    """The Celery beat: ``celery -A celery_app beat --schedule FILE``, which sends the
    periodic housekeeping task. Exactly one runs per system."""
    if cfg.beat_schedule is None:
        raise ValueError("the beat needs StackConfig.beat_schedule (its state file)")
    argv = [
        venv_command("celery"),
        "-A",
        "celery_app",
        "beat",
        "--loglevel=info",
        f"--schedule={cfg.beat_schedule}",
    ]
    return ManagedProcess(
        name,
        argv,
        cfg.env("celery-beat"),
        cwd=cfg.cwd,
        log_path=cfg.log_path(name),
        copy_path=cfg.copy_path(name),
    )


def consumer_process(cfg: StackConfig, name: str = "consumer") -> ManagedProcess:
    """The direct-queue consumer (``tasklab-consumer``)."""
    return ManagedProcess(
        name,
        [venv_command("tasklab-consumer")],
        cfg.env("consumer"),
        cwd=cfg.cwd,
        log_path=cfg.log_path(name),
        copy_path=cfg.copy_path(name),
    )


class LocalStack:
    """The services of one stack, supervised together (started in order, stopped reversed)."""

    def __init__(self, cfg: StackConfig) -> None:
        self.cfg = cfg
        self.supervisor = Supervisor()

    @property
    def processes(self) -> dict[str, ManagedProcess]:
        """The stack's processes by name."""
        return self.supervisor.processes

    def add(self, proc: ManagedProcess) -> ManagedProcess:
        """Supervise one more process (e.g. a second worker); it is not started."""
        return self.supervisor.add(proc)

    def start(
        self,
        api: bool = True,
        celery: bool = True,
        consumer: bool = True,
        timeout: float = 60,
        beat: bool = False,
    ) -> None:
        """Start the chosen services and wait until the api's ``/readyz`` answers 200.

        On failure everything is stopped and :class:`RuntimeError` is raised, with the
        end of the api's log when it logs to a file.
        """
        factories: list[tuple[bool, str, Callable[[StackConfig], ManagedProcess]]] = [
            (api, "api", api_process),
            (celery, "celery-worker", celery_process),
            (consumer, "consumer", consumer_process),
            (beat, "celery-beat", beat_process),
        ]
        try:
            for enabled, name, factory in factories:
                if enabled and name not in self.processes:
                    self.add(factory(self.cfg))
            self.supervisor.start_all()
            if api:
                url = f"{self.cfg.api_base_url}/readyz"
                wait_http_ok(url, timeout, process=self.processes["api"])
        except (OSError, RuntimeError) as exc:
            detail = str(exc)
            api_proc = self.processes.get("api")
            if api_proc is not None and api_proc.log_path is not None:
                detail += f"\n--- end of {api_proc.log_path}:\n{api_proc.log_tail()}"
            self.stop()
            raise RuntimeError(f"the local stack did not start: {detail}") from exc

    def stop(self, timeout: float = 30) -> None:
        """Stop every process of the stack (no process of their groups is left)."""
        self.supervisor.stop_all(timeout)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
