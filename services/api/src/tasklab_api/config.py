"""The api's settings (environment, then ``.env``, then defaults)."""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Annotated, Self

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode

from tasklab_api.origin import normalize_origin
from tasklab_common.settings import CommonSettings
from tasklab_common.signing import MIN_SECRET_LENGTH

#: An API key or user name: visible ASCII (no spaces; a key has no commas either).
_VISIBLE = re.compile(r"[\x21-\x7e]+")
#: A password: printable ASCII (spaces allowed, no control characters).
_PRINTABLE = re.compile(r"[\x20-\x7e]+")


class Settings(CommonSettings):
    database_url: str = Field(
        "sqlite:///./tasklab.db",
        description="Task store: sqlite:///PATH (one api process) or postgresql://...",
    )
    api_host: str = Field("0.0.0.0", description="Address uvicorn binds (API_HOST).")
    api_port: int = Field(8080, ge=1, le=65535, description="Port uvicorn binds (API_PORT).")
    api_internal_port: int | None = Field(
        None,
        ge=1,
        le=65535,
        description=(
            "A second port, on API_HOST, that serves the workers' signed routes (the "
            "status callback and housekeeping) and nothing else; the api then refuses "
            "those routes on API_PORT (API_INTERNAL_PORT). Unset: every route on API_PORT."
        ),
    )
    sync_wait_seconds: float = Field(
        30.0, gt=0, description="How long a sync submission waits for its result by default."
    )
    sync_wait_max_seconds: float = Field(
        300.0, gt=0, description="Largest `wait` a sync submission may ask for."
    )
    shutdown_timeout: int = Field(
        25,
        ge=1,
        le=3600,
        description=(
            "Seconds a stopping api waits for its open requests (after ending live "
            "streams and sync waits) before it closes them (SHUTDOWN_TIMEOUT); keep it "
            "below the pod's terminationGracePeriodSeconds."
        ),
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
            "Housekeeping: a task IN_PROGRESS (or RETRYING in the consumer) with no report "
            "for its duration plus this many seconds is marked FAILED (its worker "
            "vanished); so is a task waiting this long for a message its queue, seen empty "
            "meanwhile, no longer holds. At least CALLBACK_MAX_WAIT, the time a worker "
            "keeps retrying a report."
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
    allowed_hosts: Annotated[tuple[str, ...], NoDecode] = Field(
        (),
        description=(
            "Host names the api answers to besides IP addresses and localhost, comma "
            "separated; `*.example.com` for its subdomains (ALLOWED_HOSTS). Any other "
            "Host header is refused with 400 (DNS rebinding). The chart adds its "
            "Service's names."
        ),
    )
    max_header_bytes: int = Field(
        32 * 1024,
        ge=4096,
        le=1024 * 1024,
        description=(
            "Largest request line and headers of a request, in bytes; more: 431 (MAX_HEADER_BYTES)."
        ),
    )
    header_timeout: float = Field(
        10.0,
        gt=0,
        le=600,
        description=(
            "Seconds a client has to send a request's headers once it opened the "
            "connection or started the request; then 408 and closed (HEADER_TIMEOUT)."
        ),
    )
    body_timeout: float = Field(
        30.0,
        gt=0,
        le=3600,
        description=(
            "Seconds a client has to send a request's body once its headers are in; "
            "then the connection is closed (BODY_TIMEOUT)."
        ),
    )
    max_connections: int = Field(
        1000,
        ge=1,
        description=(
            "Open connections (live streams included) one api process serves at once; "
            "beyond them requests are answered 503 (MAX_CONNECTIONS)."
        ),
    )
    allowed_origins: Annotated[tuple[str, ...], NoDecode] = Field(
        (),
        description=(
            "Web origins besides the api's own that may call it from a browser, comma "
            "separated, e.g. https://ui.example.com (ALLOWED_ORIGINS)."
        ),
    )

    api_keys: Annotated[tuple[SecretStr, ...] | None, NoDecode] = Field(
        None,
        description=(
            "API keys accepted as `Authorization: Bearer <key>` or `X-API-Key: <key>`, "
            f"separated by commas or white space, {MIN_SECRET_LENGTH}+ visible ASCII "
            "characters each (API_KEYS). Unset: no API keys."
        ),
    )
    auth_basic_user: str | None = Field(
        None,
        description=(
            "User name of the HTTP Basic login for the web UI (AUTH_BASIC_USER), with "
            "AUTH_BASIC_PASSWORD. Unset: no Basic login."
        ),
    )
    auth_basic_password: SecretStr | None = Field(
        None,
        description=(
            f"Password of the HTTP Basic login, {MIN_SECRET_LENGTH}+ printable ASCII "
            "characters (AUTH_BASIC_PASSWORD)."
        ),
    )

    auth_failure_limit: int = Field(
        10,
        ge=0,
        description=(
            "Wrong credentials accepted per minute from one client address "
            "(AUTH_FAILURE_LIMIT); the first that many at once, then one every "
            "60/limit seconds. Past it the address gets 429 with Retry-After, without its "
            "credentials being checked, until the budget refills. 0: no limit."
        ),
    )

    k8s_namespace: str | None = Field(
        None,
        description=(
            "Namespace of the worker Deployments the UI shows on Kubernetes (K8S_NAMESPACE; "
            "default: the pod's own)."
        ),
    )
    k8s_workloads: Annotated[tuple[str, ...], NoDecode] = Field(
        ("celery-worker", "consumer"),
        description="Worker Deployments the UI shows (K8S_WORKLOADS, separated by commas).",
    )
    k8s_scale_from_ui: bool = Field(
        False,
        description=(
            "Let the UI set the replicas of those Deployments, unless an autoscaler owns "
            "them (K8S_SCALE_FROM_UI; needs RBAC patch on deployments/scale)."
        ),
    )

    @field_validator("k8s_workloads", mode="before")
    @classmethod
    def _workloads(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part for part in value.replace(" ", ",").split(",") if part)
        return value

    @property
    def auth_enabled(self) -> bool:
        """Whether the UI and the API require credentials (API keys or a Basic login)."""
        return bool(self.api_keys) or self.auth_basic_user is not None

    @field_validator("api_keys", mode="before")
    @classmethod
    def _api_keys(cls, value: object) -> object:
        if value is None:
            return None
        if isinstance(value, str):
            keys = [part for part in re.split(r"[,\s]+", value) if part]
        elif isinstance(value, list | tuple):
            keys = [v.get_secret_value() if isinstance(v, SecretStr) else str(v) for v in value]
        else:
            return value
        if not keys:
            raise ValueError("set but holds no key (unset API_KEYS to turn API keys off)")
        for n, key in enumerate(keys, 1):
            if len(key) < MIN_SECRET_LENGTH:
                raise ValueError(
                    f"key {n} of {len(keys)} has {len(key)} characters; "
                    f"each key needs at least {MIN_SECRET_LENGTH}"
                )
            if not _VISIBLE.fullmatch(key) or "," in key:
                raise ValueError(
                    f"key {n} of {len(keys)}: only visible ASCII characters, no commas"
                )
        return tuple(SecretStr(key) for key in dict.fromkeys(keys))

    @field_validator("auth_basic_user")
    @classmethod
    def _basic_user(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value:
            raise ValueError("set but empty (unset it to turn the Basic login off)")
        if len(value) > 128 or not _VISIBLE.fullmatch(value) or ":" in value:
            raise ValueError("at most 128 visible ASCII characters, no ':'")
        return value

    @field_validator("auth_basic_password")
    @classmethod
    def _basic_password(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        password = value.get_secret_value()
        if len(password) < MIN_SECRET_LENGTH:
            raise ValueError(f"must be at least {MIN_SECRET_LENGTH} characters")
        if not _PRINTABLE.fullmatch(password):
            raise ValueError(
                "only printable ASCII characters (no control characters; a trailing newline?)"
            )
        return value

    @model_validator(mode="after")
    def _two_ports(self) -> Self:
        if self.api_internal_port == self.api_port:
            raise ValueError("API_INTERNAL_PORT must differ from API_PORT")
        return self

    @model_validator(mode="after")
    def _basic_pair(self) -> Self:
        if (self.auth_basic_user is None) != (self.auth_basic_password is None):
            raise ValueError(
                "AUTH_BASIC_USER and AUTH_BASIC_PASSWORD go together: set both or neither"
            )
        return self

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

    @field_validator("allowed_hosts", mode="before")
    @classmethod
    def _hosts(cls, value: object) -> object:
        if isinstance(value, str):
            value = [part for part in value.replace(" ", ",").split(",") if part]
        if not isinstance(value, list | tuple):
            return value
        for item in value:
            name = str(item).removeprefix("*.")
            if not _HOST_NAME.fullmatch(name):
                raise ValueError(f"not a host name: {str(item)[:100]!r}")
        return tuple(str(item).lower() for item in value)


#: A DNS name (letters, digits, hyphens; dots between labels).
_HOST_NAME = re.compile(r"(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.?)+")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()  # required values come from the environment
