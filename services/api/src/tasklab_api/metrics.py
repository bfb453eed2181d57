"""Prometheus metrics of the api (prefix ``tasklab_``)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from tasklab_api.orm import Task

# From 10 ms to an hour: fits both 0-s tasks and minutes-long ones.
TIME_BUCKETS = (
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
    120,
    300,
    600,
    1800,
    3600,
)

TASKS_SUBMITTED = Counter(
    "tasklab_tasks_submitted_total", "Tasks accepted (2xx) by method and kind", ["method", "kind"]
)
TASKS_REJECTED = Counter(
    "tasklab_tasks_rejected_total", "Submissions refused, by reason", ["method", "reason"]
)
TASKS_FINISHED = Counter(
    "tasklab_tasks_finished_total",
    "Tasks that reached a final status, by method, kind and status",
    ["method", "kind", "status"],
)
TASK_RETRIES = Counter(
    "tasklab_task_retries_total", "Attempts that failed and were retried", ["method"]
)
QUEUE_WAIT = Histogram(
    "tasklab_task_queue_wait_seconds", "created → started", ["method"], buckets=TIME_BUCKETS
)
RUN_TIME = Histogram(
    "tasklab_task_run_seconds", "started → finished", ["method"], buckets=TIME_BUCKETS
)
E2E_TIME = Histogram(
    "tasklab_task_e2e_seconds", "created → finished", ["method"], buckets=TIME_BUCKETS
)
CALLBACKS = Counter("tasklab_callbacks_total", "Status callbacks received, by outcome", ["outcome"])


def observe_started(task: Task) -> None:
    if task.started_at is not None:
        QUEUE_WAIT.labels(task.method).observe((task.started_at - task.created_at).total_seconds())


def observe_finished(task: Task) -> None:
    TASKS_FINISHED.labels(task.method, task.kind, task.status).inc()
    if task.finished_at is None:
        return
    E2E_TIME.labels(task.method).observe((task.finished_at - task.created_at).total_seconds())
    if task.started_at is not None:
        RUN_TIME.labels(task.method).observe((task.finished_at - task.started_at).total_seconds())
