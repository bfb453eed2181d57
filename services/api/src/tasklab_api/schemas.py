"""Request and response models of the HTTP API."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, computed_field, model_validator

from tasklab_common.messages import TaskParams, check_params_for_kind
from tasklab_common.models import Method, TaskKind, TaskStatus


class TaskCreate(TaskParams):
    """A submission: the task's parameters (``duration`` is passed to process_task as
    ``timeout``), its method and kind, and what the api does with it."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"method": "celery", "duration": 5},
                {"method": "rabbitmq", "kind": "process_data", "numbers": [1, 2, 3.5]},
                {"method": "sync", "duration": 1, "fail_times": 1},
            ]
        },
    )

    method: Method
    kind: TaskKind = TaskKind.PROCESS_TASK
    label: Annotated[
        str | None,
        Field(max_length=100, description="A free-text name shown with the task."),
    ] = None
    wait: Annotated[
        float | None,
        Field(
            strict=True,
            gt=0,
            allow_inf_nan=False,
            description="sync only: seconds to wait for the result (default SYNC_WAIT_SECONDS).",
        ),
    ] = None

    @model_validator(mode="after")
    def _consistent(self) -> TaskCreate:
        check_params_for_kind(self.kind, self.params())
        if self.wait is not None and self.method is not Method.SYNC:
            raise ValueError("`wait` is only for method sync")
        return self

    def params(self) -> TaskParams:
        """The task's parameters alone (what is stored and sent to the worker)."""
        return TaskParams.model_validate(self.model_dump(include=set(TaskParams.model_fields)))


class TaskOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    num: int
    method: Method
    kind: TaskKind
    status: TaskStatus
    params: dict[str, Any]
    result: dict[str, Any] | None
    error: str | None
    worker: str | None
    attempts: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime

    @computed_field  # type: ignore[prop-decorator]
    @property
    def queue_wait_seconds(self) -> float | None:
        """created → started."""
        if self.started_at is None:
            return None
        return round((self.started_at - self.created_at).total_seconds(), 4)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def run_seconds(self) -> float | None:
        """started → finished."""
        if self.started_at is None or self.finished_at is None:
            return None
        return round((self.finished_at - self.started_at).total_seconds(), 4)


class TaskPage(BaseModel):
    items: list[TaskOut]
    total: int
    limit: int
    offset: int


class QueueOut(BaseModel):
    name: str
    ready: int
    unacked: int
    consumers: int


class WorkerOut(BaseModel):
    name: str
    queue: str | None = Field(description="The queue it consumes, when it is online.")
    online: bool
    running: int
    done: int
    failed: int
    last_seen: datetime | None


class PodOut(BaseModel):
    name: str
    phase: str
    ready: bool
    restarts: int
    age_seconds: float | None
    terminating: bool


class AutoscalerOut(BaseModel):
    kind: str = Field(description="HorizontalPodAutoscaler, or KEDA ScaledObject (its HPA).")
    name: str
    min_replicas: int
    max_replicas: int
    current: int
    desired: int


class WorkloadOut(BaseModel):
    name: str = Field(description="The Deployment (celery-worker, consumer).")
    desired: int
    ready: int
    updated: int
    autoscaler: AutoscalerOut | None = Field(description="Who owns the replica count, if any.")
    pods: list[PodOut]


class ClusterOut(BaseModel):
    available: bool = Field(description="False outside a cluster, or when the API refused.")
    reason: str | None = None
    namespace: str | None = None
    scale_from_ui: bool = False
    workloads: list[WorkloadOut] = []


class ScaleIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    replicas: int = Field(ge=0, le=20, strict=True, description="Replicas to set (0-20).")


class OverviewOut(BaseModel):
    counts: dict[TaskStatus, int]
    in_progress: int = Field(description="Tasks running or retrying, from the task store.")
    waiting: int = Field(description="Tasks accepted and not started (PENDING), from the store.")
    queues: list[QueueOut] | None = Field(
        description="The broker's own figures (its statistics lag a few seconds); None when "
        "they are unknown."
    )
    broker_stats_age: float | None = Field(
        None, description="Seconds since the broker's figures were read."
    )
    broker_stats_error: str | None = None
    workers: list[WorkerOut]


class ActivityTaskOut(BaseModel):
    """A task as the timeline draws it (no parameters or result)."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    num: int
    method: Method
    kind: TaskKind
    status: TaskStatus
    worker: str | None
    attempts: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime


class SeriesOut(BaseModel):
    submitted: list[int] = Field(description="Tasks submitted in each bucket.")
    finished: list[int] = Field(description="Tasks that ended (any final status) in each bucket.")
    failed: list[int] = Field(description="Of those, the FAILED ones.")
    waiting: list[int] = Field(description="Tasks accepted and not started at each bucket's end.")
    running: list[int] = Field(description="Tasks running (or retrying) at each bucket's end.")


class ActivityOut(BaseModel):
    now: datetime
    start: datetime = Field(description="Start of the first bucket (aligned to the clock).")
    bucket_seconds: float
    series: SeriesOut
    tasks: list[ActivityTaskOut] = Field(
        description="Tasks changed in the window or not final, newest first (bounded)."
    )
    tasks_total: int = Field(description="How many there are in all.")


class ErrorOut(BaseModel):
    detail: str
