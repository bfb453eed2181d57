"""Prometheus metrics of the api.

Two families:

- ``tasklab_*``: every method (celery, rabbitmq, sync), from the task store's point of
  view: submissions, final statuses, retries, queue wait / run / end-to-end time,
  callbacks, queue depth and consumers, HTTP traffic.
- ``celery_*``: the metric names of the community celery-exporter, for the Celery
  path (methods ``celery`` and ``sync``), so that its public dashboards and alerts
  work unchanged. They are derived from the status callbacks rather than Celery
  events, so workers need no ``-E`` and no extra component has to run.

Counters count what the process that exports them handled: with several api
replicas, sum them (``sum(rate(...))``). Gauges (queue depth, tasks by status,
workers) are read from the broker and the task store at scrape time and are the same
in every replica: aggregate them with ``max``.

Label values that come from workers' reports (worker host names, exception names) are
drawn from bounded sets (:class:`BoundedLabel`): a compromised or misbehaving worker
cannot grow the number of series without limit, and pods replaced by autoscaling add
at most :data:`MAX_HOSTNAMES` of them over a process's life.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from enum import StrEnum

from prometheus_client import Counter, Gauge, Histogram

from tasklab_api.brokerstats import BrokerSnapshot
from tasklab_api.orm import AnyTask
from tasklab_common.messages import StatusUpdate
from tasklab_common.models import Method, TaskStatus, Verdict
from tasklab_common.queues import CELERY_QUEUE

#: From 10 ms to an hour: fits 0-s tasks and minutes-long ones.
TIME_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)

TASKS_SUBMITTED = Counter(
    "tasklab_tasks_submitted_total", "Tasks accepted (2xx), by method and kind", ["method", "kind"]
)
TASKS_REJECTED = Counter(
    "tasklab_tasks_rejected_total",
    "Submissions refused after validation (rate limited, broker unavailable), by reason",
    ["method", "reason"],
)
TASKS_FINISHED = Counter(
    "tasklab_tasks_finished_total",
    "Tasks that reached a final status, by method, kind and status",
    ["method", "kind", "status"],
)
TASK_RETRIES = Counter(
    "tasklab_task_retries_total", "Attempts that failed and were retried", ["method", "kind"]
)
QUEUE_WAIT = Histogram(
    "tasklab_task_queue_wait_seconds",
    "Time from submission to the first start (created → started)",
    ["method"],
    buckets=TIME_BUCKETS,
)
RUN_TIME = Histogram(
    "tasklab_task_run_seconds",
    "Time from the first start to the final status (started → finished)",
    ["method"],
    buckets=TIME_BUCKETS,
)
E2E_TIME = Histogram(
    "tasklab_task_e2e_seconds",
    "Time from submission to the final status (created → finished)",
    ["method"],
    buckets=TIME_BUCKETS,
)
CALLBACKS = Counter(
    "tasklab_callbacks_total",
    "Status callbacks received, by outcome (applied, stale, duplicate, gave_up, "
    "unauthenticated, replayed, invalid, unknown_task)",
    ["outcome"],
)
HOUSEKEEPING_RUNS = Counter(
    "tasklab_housekeeping_runs", "Housekeeping runs (requested by the Celery beat schedule)"
)
HOUSEKEEPING_TASKS = Counter(
    "tasklab_housekeeping_tasks",
    "Tasks housekeeping acted on: failed_stuck (no report past its limit), "
    "failed_orphaned (PENDING, its queue empty: the message is gone), purged",
    ["action"],
)
TASKS = Gauge("tasklab_tasks", "Tasks in the store by current status", ["status"])
QUEUE_MESSAGES = Gauge(
    "tasklab_queue_messages", "Messages in a queue, ready or unacknowledged", ["queue", "state"]
)
QUEUE_CONSUMERS = Gauge("tasklab_queue_consumers", "Consumers of a queue", ["queue"])
BROKER_STATS_UP = Gauge(
    "tasklab_broker_stats_up", "1 when the broker's management API answered the last read"
)
WORKERS_ONLINE = Gauge(
    "tasklab_workers_online", "Workers consuming a queue (by their connection name)", ["queue"]
)
HTTP_REQUESTS = Counter(
    "tasklab_http_requests_total",
    "HTTP requests by method, route template and status code",
    ["method", "route", "code"],
)
HTTP_LATENCY = Histogram(
    "tasklab_http_request_duration_seconds",
    "HTTP request latency by method and route template",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)

# ---- celery-exporter names (Celery path only)
_CELERY_LABELS = ["name", "hostname", "queue_name"]
CELERY_SENT = Counter("celery_task_sent", "Task messages published", _CELERY_LABELS)
CELERY_STARTED = Counter("celery_task_started", "Tasks a worker started", _CELERY_LABELS)
CELERY_SUCCEEDED = Counter("celery_task_succeeded", "Tasks that succeeded", _CELERY_LABELS)
CELERY_FAILED = Counter(
    "celery_task_failed", "Tasks that failed for good", [*_CELERY_LABELS, "exception"]
)
CELERY_RETRIED = Counter("celery_task_retried", "Attempts that will be retried", _CELERY_LABELS)
CELERY_REVOKED = Counter("celery_task_revoked", "Tasks revoked (cancelled)", _CELERY_LABELS)
CELERY_RUNTIME = Histogram(
    "celery_task_runtime", "Task runtime, seconds", _CELERY_LABELS, buckets=TIME_BUCKETS
)
CELERY_WORKER_UP = Gauge("celery_worker_up", "1 while the worker consumes", ["hostname"])
CELERY_WORKER_ACTIVE = Gauge(
    "celery_worker_tasks_active", "Tasks the worker is running", ["hostname"]
)
CELERY_QUEUE_LENGTH = Gauge("celery_queue_length", "Messages ready in the queue", ["queue_name"])
CELERY_ACTIVE_CONSUMERS = Gauge(
    "celery_active_consumer_count", "Consumers of the queue", ["queue_name"]
)
CELERY_ACTIVE_WORKERS = Gauge(
    "celery_active_worker_count", "Workers consuming the queue", ["queue_name"]
)


#: Distinct worker host names a counter keeps as labels; later ones count as "other".
MAX_HOSTNAMES = 64
#: Distinct exception names of ``celery_task_failed``; later ones count as "other".
MAX_EXCEPTIONS = 32
OTHER = "other"


class BoundedLabel:
    """Label values of a counter: the first ``limit`` distinct ones that match
    ``pattern`` are kept, anything else becomes :data:`OTHER`."""

    def __init__(self, limit: int, pattern: str) -> None:
        self.limit = limit
        self.pattern = re.compile(pattern)
        self.seen: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, value: str) -> str:
        with self._lock:
            if value in self.seen:
                return value
            if len(self.seen) >= self.limit or not self.pattern.fullmatch(value):
                return OTHER
            self.seen.add(value)
            return value


HOSTNAMES = BoundedLabel(MAX_HOSTNAMES, r"[A-Za-z0-9_.:+-]{1,100}")
EXCEPTIONS = BoundedLabel(MAX_EXCEPTIONS, r"[A-Za-z_][A-Za-z0-9_.]{0,79}")


def _celery_path(task: AnyTask) -> bool:
    return Method(task.method).runs_on_celery


def _node(worker: str | None) -> str:
    """celery-exporter's hostname label: the node name without ``celery@``."""
    return (worker or "unknown").split("@", 1)[-1]


def _hostname(worker: str | None) -> str:
    """The hostname label of a counter (bounded: see :class:`BoundedLabel`)."""
    return HOSTNAMES(_node(worker))


def _celery_labels(task: AnyTask) -> dict[str, str]:
    return {"name": task.kind, "hostname": _hostname(task.worker), "queue_name": CELERY_QUEUE}


def on_submitted(task: AnyTask) -> None:
    TASKS_SUBMITTED.labels(task.method, task.kind).inc()
    if _celery_path(task):
        CELERY_SENT.labels(task.kind, "generic", CELERY_QUEUE).inc()


def on_rejected(method: Method, reason: str) -> None:
    TASKS_REJECTED.labels(method.value, reason).inc()


class Refusal(StrEnum):
    """Why a signed request was refused before the store saw it (``outcome`` labels of
    the callback metric, beside the :class:`~tasklab_common.models.Verdict` values)."""

    UNAUTHENTICATED = "unauthenticated"
    REPLAYED = "replayed"
    INVALID = "invalid"
    UNKNOWN_TASK = "unknown_task"


def on_callback_refused(refusal: Refusal) -> None:
    CALLBACKS.labels(refusal.value).inc()


def on_report(verdict: Verdict, task: AnyTask, update: StatusUpdate) -> None:
    """A worker's report the store took, with the verdict it gave."""
    CALLBACKS.labels(verdict.value).inc()
    if verdict is Verdict.GAVE_UP:
        on_finished(task)
    elif verdict is Verdict.APPLIED:
        _on_applied(task, update)


def on_cancelled(task: AnyTask) -> None:
    on_finished(task)


def on_housekeeping_run() -> None:
    HOUSEKEEPING_RUNS.inc()


def on_housekeeping(
    failed_stuck: Sequence[AnyTask], failed_orphaned: Sequence[AnyTask], purged: int | None
) -> None:
    """What one housekeeping run did: the tasks it marked FAILED, and how many it
    deleted (None: history is kept for ever)."""
    for action, tasks in (("failed_stuck", failed_stuck), ("failed_orphaned", failed_orphaned)):
        for task in tasks:
            HOUSEKEEPING_TASKS.labels(action).inc()
            on_finished(task)
    if purged is not None:
        HOUSEKEEPING_TASKS.labels("purged").inc(purged)


def on_http_request(method: str, route: str, code: int, seconds: float | None) -> None:
    """One HTTP request (``seconds`` None: a stream, whose length says nothing)."""
    HTTP_REQUESTS.labels(method, route, str(code)).inc()
    if seconds is not None:
        HTTP_LATENCY.labels(method, route).observe(seconds)


def _on_applied(task: AnyTask, update: StatusUpdate) -> None:
    """A worker's report that was applied (moved the task forward)."""
    celery = _celery_path(task)
    if update.status is TaskStatus.IN_PROGRESS:
        if update.attempt == 1 and task.started_at is not None:
            QUEUE_WAIT.labels(task.method).observe(
                (task.started_at - task.created_at).total_seconds()
            )
        if celery:
            CELERY_STARTED.labels(**_celery_labels(task)).inc()
    elif update.status is TaskStatus.RETRYING:
        TASK_RETRIES.labels(task.method, task.kind).inc()
        if celery:
            CELERY_RETRIED.labels(**_celery_labels(task)).inc()
    elif update.status.is_final:
        on_finished(task)


def on_finished(task: AnyTask) -> None:
    TASKS_FINISHED.labels(task.method, task.kind, task.status).inc()
    if task.finished_at is not None:
        E2E_TIME.labels(task.method).observe((task.finished_at - task.created_at).total_seconds())
        if task.started_at is not None:
            run = (task.finished_at - task.started_at).total_seconds()
            RUN_TIME.labels(task.method).observe(run)
            if _celery_path(task) and task.status == TaskStatus.DONE:
                CELERY_RUNTIME.labels(**_celery_labels(task)).observe(run)
    if not _celery_path(task):
        return
    labels = _celery_labels(task)
    if task.status == TaskStatus.DONE:
        CELERY_SUCCEEDED.labels(**labels).inc()
    elif task.status == TaskStatus.FAILED:
        exception = EXCEPTIONS((task.error or "").split(":", 1)[0])
        CELERY_FAILED.labels(**labels, exception=exception).inc()
    elif task.status == TaskStatus.CANCELLED:
        CELERY_REVOKED.labels(**labels).inc()


def set_gauges(
    counts: dict[TaskStatus, int],
    snap: BrokerSnapshot,
    running_by_worker: dict[str, int],
) -> None:
    """Refresh the scrape-time gauges from the store and the broker."""
    for status in TaskStatus:
        TASKS.labels(status.value).set(counts.get(status, 0))
    BROKER_STATS_UP.set(1 if snap.ok else 0)
    # No figures rather than the last ones: alerts read these gauges (an external
    # broker), and stale depths would keep them firing, or silent, for ever.
    for gauge in (
        QUEUE_MESSAGES,
        QUEUE_CONSUMERS,
        WORKERS_ONLINE,
        CELERY_QUEUE_LENGTH,
        CELERY_ACTIVE_CONSUMERS,
        CELERY_ACTIVE_WORKERS,
        CELERY_WORKER_UP,
        CELERY_WORKER_ACTIVE,
    ):
        gauge.clear()
    if not snap.ok:
        return
    for q in snap.queues:
        if q.counted:  # (placeholder zeros are no depth)
            QUEUE_MESSAGES.labels(q.name, "ready").set(q.ready)
            QUEUE_MESSAGES.labels(q.name, "unacked").set(q.unacked)
        QUEUE_CONSUMERS.labels(q.name).set(q.consumers)
        WORKERS_ONLINE.labels(q.name).set(len(q.consumer_names))
        if q.name == CELERY_QUEUE:
            CELERY_QUEUE_LENGTH.labels(q.name).set(q.ready)
            CELERY_ACTIVE_CONSUMERS.labels(q.name).set(q.consumers)
            CELERY_ACTIVE_WORKERS.labels(q.name).set(len(q.consumer_names))
            for name in q.consumer_names:
                # (gauges are rebuilt on every scrape from who consumes now: bounded)
                CELERY_WORKER_UP.labels(_node(name)).set(1)
                CELERY_WORKER_ACTIVE.labels(_node(name)).set(running_by_worker.get(name, 0))
