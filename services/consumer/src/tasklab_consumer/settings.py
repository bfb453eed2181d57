"""The consumer's settings: the shared worker settings plus its own ``CONSUMER_*``."""

from __future__ import annotations

import socket

from pydantic import Field, ValidationError

from tasklab_common.errors import validation_problems
from tasklab_common.messages import MAX_WORKER_CHARS
from tasklab_common.settings import WorkerSettings


def default_name() -> str:
    """``consumer@<hostname>``: the name reported as ``worker`` in callbacks."""
    return f"consumer@{socket.gethostname()}"


class ConsumerSettings(WorkerSettings):
    """Everything ``tasklab-consumer`` reads from its environment."""

    consumer_concurrency: int = Field(
        3, ge=1, le=100, description="Tasks run at once; also the prefetch count."
    )
    consumer_isolation_wait: float = Field(
        60.0,
        ge=0,
        le=600,
        description=(
            "Seconds a redelivered message waits for the running tasks to end so that it "
            "runs alone (new messages wait behind it meanwhile); past that it runs beside "
            "them. Keeps a poison message from killing its neighbours again. 0: off. "
            "Keep it well under the api's STUCK_GRACE_SECONDS."
        ),
    )
    consumer_name: str = Field(
        default_factory=default_name,
        min_length=1,
        max_length=MAX_WORKER_CHARS,
        description="Name reported as the task's worker and in log lines.",
    )
    consumer_heartbeat: int = Field(
        30, ge=1, le=3600, description="AMQP heartbeat interval in seconds."
    )
    reconnect_backoff: float = Field(
        1.0, gt=0, description="Seconds before the first reconnection; doubles each time."
    )
    reconnect_backoff_max: float = Field(30.0, gt=0, description="Cap of the reconnect delay.")


class ConfigurationError(Exception):
    """The environment does not describe a usable consumer; the message says why."""


def load_settings() -> ConsumerSettings:
    """Read the settings; raise :class:`ConfigurationError` with a one-line reason."""
    try:
        return ConsumerSettings()
    except ValidationError as exc:
        problems = validation_problems(exc, settings=True, whole="settings")
        raise ConfigurationError(problems) from None
