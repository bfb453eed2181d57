"""Settings base shared by every service (pydantic-settings).

Values come from the environment, then from a ``.env`` file in the working
directory (``make dev`` writes one), then from the defaults. Secrets have no
defaults: a service without ``CALLBACK_SECRET`` refuses to start with a clear error.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from tasklab_common.signing import MIN_SECRET_LENGTH

#: The api's status callback route (``API_URL`` ends in it).
CALLBACK_PATH = "/update_task_status_api/"
#: The api's housekeeping route (asked by the beat's task, next to the callback route).
HOUSEKEEPING_PATH = "/internal/housekeeping"


class BrokerSettings(BaseSettings):
    """The broker and logging: all that a broker-only command (``celery inspect``) needs."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", frozen=True)

    rmq_url: SecretStr = Field(
        description="AMQP URL of the broker, e.g. amqp://user:password@host:5672/ (RMQ_URL).",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["text", "json"] = "text"

    @field_validator("rmq_url")
    @classmethod
    def _amqp_scheme(cls, value: SecretStr) -> SecretStr:
        parts = urlsplit(value.get_secret_value())
        if parts.scheme not in ("amqp", "amqps") or not parts.hostname:
            raise ValueError("RMQ_URL must look like amqp://user:password@host:5672/")
        return value

    def amqp_url(self) -> str:
        return self.rmq_url.get_secret_value()


class CommonSettings(BrokerSettings):
    """What every service needs: the broker, logging and the callback secret."""

    callback_secret: SecretStr = Field(
        description="Shared secret that authenticates status callbacks (CALLBACK_SECRET).",
    )

    @field_validator("callback_secret")
    @classmethod
    def _long_enough(cls, value: SecretStr) -> SecretStr:
        if len(value.get_secret_value()) < MIN_SECRET_LENGTH:
            raise ValueError(f"CALLBACK_SECRET must be at least {MIN_SECRET_LENGTH} characters")
        return value


class WorkerSettings(CommonSettings):
    """Settings of the processes that run tasks (Celery worker, consumer)."""

    api_url: str = Field(
        description="The api's callback URL, ending in /update_task_status_api/ (API_URL).",
    )
    requeue_delay: float = Field(
        5.0,
        ge=0,
        description=(
            "Seconds to wait before requeueing a task whose status report could not be "
            "delivered, so that a refusing api is not hammered (REQUEUE_DELAY)."
        ),
    )
    callback_timeout: float = Field(5.0, gt=0, description="Seconds per callback request.")
    callback_max_wait: float = Field(
        900.0, gt=0, description="Seconds a callback is retried while the api is unreachable."
    )
    callback_stopping_wait: float = Field(
        30.0,
        ge=0,
        description=(
            "Seconds a stopping worker (SIGTERM) retries a callback while the api is "
            "unreachable (e.g. uninstalled with it); then the task's message goes back to "
            "the broker and the task runs again (CALLBACK_STOPPING_WAIT)."
        ),
    )
    max_retries: int = Field(3, ge=0, le=10, description="Retries after a failed attempt.")
    retry_backoff: float = Field(
        1.0, ge=0, description="Seconds before the first retry; doubles each retry."
    )
    retry_backoff_max: float = Field(30.0, ge=0, description="Cap of the retry delay.")
    heartbeat_file: Path | None = Field(
        None,
        description="A file the main loop touches every 10 s, for liveness probes.",
    )
    hand_back_after: float = Field(
        0.0,
        ge=0,
        description=(
            "Seconds a stopping worker (SIGTERM) lets its running tasks run before it hands "
            "them back to the broker, reported RETRYING, for another worker to run as the "
            "next attempt; 0: never, they run to the end (HAND_BACK_AFTER). Keep it below "
            "the pod's grace period."
        ),
    )

    @field_validator("api_url")
    @classmethod
    def _callback_route(cls, value: str) -> str:
        # A wrong path would have every report refused; better not to start at all.
        parts = urlsplit(value)
        if (
            parts.scheme not in ("http", "https")
            or not parts.hostname
            # (without the final slash the route answers a redirect, not followed)
            or not parts.path.endswith(CALLBACK_PATH)
        ):
            raise ValueError(
                f"API_URL must be the api's callback URL, like http://api:8080{CALLBACK_PATH}"
            )
        return value


def setup_logging(settings: BrokerSettings, *, fmt: str | None = None) -> None:
    """Configure the root logger: the guide's readable lines, or JSON."""
    handler = logging.StreamHandler()
    from tasklab_common.logfmt import JsonFormatter, TextFormatter

    if settings.log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            TextFormatter(fmt or "[%(asctime)s] %(name)s: %(message)s", "%Y-%m-%d %H:%M:%S")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level)
    skip_unused_record_fields()


def skip_unused_record_fields() -> None:
    """Leave out of every log record what no format of ours shows: the caller's file,
    line and function (a walk up the stack at each record), the thread's and the
    process's names and ids. The knobs of the logging HOWTO's "Optimization" section;
    a worker logs a few lines per task."""
    logging._srcfile = None  # (documented there)
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
