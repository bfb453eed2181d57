"""The api's settings (environment, then ``.env``, then defaults)."""

from __future__ import annotations

from functools import lru_cache
from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import NoDecode

from tasklab_api.origin import normalize_origin
from tasklab_common.settings import CommonSettings


class Settings(CommonSettings):
    database_url: str = Field(
        "sqlite:///./tasklab.db",
        description="Task store: sqlite:///PATH (one api process) or postgresql://...",
    )
    api_host: str = Field("0.0.0.0", description="Address uvicorn binds (API_HOST).")
    api_port: int = Field(8080, ge=1, le=65535, description="Port uvicorn binds (API_PORT).")
    sync_wait_seconds: float = Field(
        30.0, gt=0, description="How long a sync submission waits for its result by default."
    )
    sync_wait_max_seconds: float = Field(
        300.0, gt=0, description="Largest `wait` a sync submission may ask for."
    )
    publish_timeout: float = Field(
        5.0, gt=0, description="Seconds to wait for the broker to confirm a publish."
    )
    broker_connect_timeout: float = Field(5.0, gt=0, description="Seconds per connect attempt.")
    submit_rate: float = Field(
        200.0, ge=0, description="Submissions per second per client address (0: unlimited)."
    )
    submit_burst: int = Field(400, ge=1, description="Burst size of the submission limit.")
    max_body_bytes: int = Field(
        1_048_576, ge=1024, description="Largest request body accepted (413 above)."
    )
    callback_tolerance_seconds: float = Field(
        300.0, gt=0, description="How far a callback's signed timestamp may be from now."
    )
    rmq_management_url: str | None = Field(
        None,
        description="RabbitMQ management API, e.g. http://rabbitmq:15672/ (queue depth).",
    )
    delivery_limit: int = Field(
        5,
        ge=1,
        le=100,
        description=(
            "Times one attempt of a task may start without reporting an outcome (its "
            "worker died each time) before the task is marked FAILED and its message "
            "dead-lettered (DELIVERY_LIMIT)."
        ),
    )
    stuck_grace_seconds: float = Field(
        900.0,
        gt=0,
        description=(
            "Housekeeping: a task IN_PROGRESS or RETRYING with no report for its duration "
            "plus this many seconds is marked FAILED (its worker vanished). At least "
            "CALLBACK_MAX_WAIT, the time a worker keeps retrying a report."
        ),
    )
    history_retention_days: float = Field(
        30.0,
        ge=0,
        description=(
            "Housekeeping: final tasks (and their reports) older than this are deleted "
            "(0: kept forever)."
        ),
    )
    revoke_timeout: float = Field(5.0, gt=0, description="Seconds to broadcast a Celery revoke.")
    forwarded_allow_ips: str = Field(
        "",
        description=(
            "Addresses of the reverse proxies whose X-Forwarded-For/-Proto headers are "
            "trusted, comma separated (uvicorn's FORWARDED_ALLOW_IPS); empty: none, so a "
            "client cannot pick the address the submission limit counts against."
        ),
    )
    allowed_origins: Annotated[tuple[str, ...], NoDecode] = Field(
        (),
        description=(
            "Web origins besides the api's own that may call it from a browser, comma "
            "separated, e.g. https://ui.example.com (ALLOWED_ORIGINS)."
        ),
    )

    @field_validator("allowed_origins", mode="before")
    @classmethod
    def _origins(cls, value: object) -> object:
        if isinstance(value, str):
            value = [part for part in value.replace(" ", ",").split(",") if part]
        if not isinstance(value, list | tuple):
            return value
        origins = []
        for item in value:
            origin = normalize_origin(str(item))
            if origin is None:
                raise ValueError(f"not an origin (scheme://host[:port]): {str(item)[:100]!r}")
            origins.append(origin)
        return tuple(origins)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()  # required values come from the environment
