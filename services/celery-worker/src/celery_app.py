"""The Celery application of the original guide, configured for at-least-once processing.

``celery -A celery_app worker --loglevel=info --concurrency=3`` runs the worker;
``celery -A celery_app inspect registered|active|stats`` and ``purge`` need only
``RMQ_URL``. Settings come from the environment, then from ``.env`` in the working
directory.

Importing this module reads ``RMQ_URL`` and nothing else; without it, it warns and
uses a placeholder broker URL whose host never resolves, so a command that connects
fails. Everything else a worker needs (``API_URL``, ``CALLBACK_SECRET``, retry
settings) is read and checked when the worker starts: a worker without it exits at
once with a one-line error.

Delivery guarantees: messages are acknowledged after the task ran (``acks_late``)
and requeued when the worker process running them dies; one message is prefetched
per process; publishing (retries) waits for broker confirms.

The result backend is the guide's ``rpc://``: a caller that asks for a result, like
the guide's ``process_task.delay(...).get()``, gets it on its own reply queue (such a
task, not submitted through the api, runs without status reports: the api does not
track it). The
api's messages carry no ``reply_to``, and for those the backend stores nothing (no
queue is declared and nothing is published), so it costs the api's tasks nothing.
"""

from __future__ import annotations

import contextlib
import faulthandler
import logging
import multiprocessing
import os
import signal
import socket
import sys
import threading
import time
from functools import lru_cache
from typing import Any, Final

from celery import Celery, bootsteps, signals
from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from celery_conf import at_least_once
from tasklab_common.errors import validation_problems
from tasklab_common.heartbeat import Heartbeat
from tasklab_common.messages import MAX_DURATION_SECONDS
from tasklab_common.queues import CELERY_QUEUE
from tasklab_common.settings import BrokerSettings, WorkerSettings, setup_logging

#: Broker URL used when ``RMQ_URL`` is missing or invalid: the ``.invalid`` top-level
#: domain never resolves, and the name says what to fix.
UNSET_BROKER_URL: Final = "amqp://rmq-url-not-set.invalid:5672//"

#: Logger of the task runner's own lines (``Celery Worker celery: Started ...``).
TASK_LOGGER: Final = "tasklab.celery"

#: Past this many seconds a task gets ``SoftTimeLimitExceeded`` and fails (then is
#: retried or reported failed). Longer than the longest work a task may ask for,
#: leaving room for the status reports around it.
SOFT_TIME_LIMIT: Final = MAX_DURATION_SECONDS + 120
#: Past this many seconds the process running a task is killed; the margin over the
#: soft limit lets a timed-out task still report its failure.
TIME_LIMIT: Final = SOFT_TIME_LIMIT + 60


#: The periodic housekeeping task (see ``celery_tasks.housekeeping``).
HOUSEKEEPING_TASK: Final = "tasklab.housekeeping"


class BeatSettings(BaseSettings):
    """What ``celery -A celery_app beat`` reads besides ``RMQ_URL``."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", frozen=True)

    housekeeping_interval: float = Field(
        300.0,
        ge=1,
        le=86400,
        description=(
            "Seconds between two housekeeping runs: stuck tasks marked FAILED, old "
            "history purged (HOUSEKEEPING_INTERVAL)."
        ),
    )


def _housekeeping_interval() -> float:
    try:
        return BeatSettings().housekeeping_interval
    except ValidationError as exc:
        default = float(BeatSettings.model_fields["housekeeping_interval"].default)
        logging.getLogger(__name__).warning(
            "%s; housekeeping every %g s", settings_problems(exc), default
        )
        return default


#: Fault injection, for the fault suite only: when set, the worker hangs once its
#: shutdown is done, before it exits (the watchdog of :class:`StopWatchdogStep` ends it).
#: Unset (the default) in every deployment.
HANG_ON_STOP_ENV: Final = "TASKLAB_FAULT_HANG_ON_STOP"


class CeleryWorkerSettings(WorkerSettings):
    """Settings of a running worker (``RMQ_URL``, ``API_URL``, ``CALLBACK_SECRET``...)."""

    stop_linger: float = Field(
        30.0,
        ge=0,
        description=(
            "Seconds a stopping worker (SIGTERM) may take to exit once no task runs; "
            "past them it logs where it waits and exits: what it had not acknowledged "
            "goes back to the queue (STOP_LINGER; 0: wait as long as it takes)."
        ),
    )


@lru_cache(maxsize=1)
def get_settings() -> CeleryWorkerSettings:
    """The worker's settings, read once per process (raises ``ValidationError``)."""
    return CeleryWorkerSettings()


def settings_problems(exc: ValidationError) -> str:
    """One line naming each invalid setting by its variable; never echoes values."""
    return validation_problems(exc, settings=True, whole="settings")


def _broker_url() -> str:
    """``RMQ_URL``, or the placeholder (with a warning saying why) when it cannot be used."""
    try:
        return BrokerSettings().amqp_url()
    except ValidationError as exc:
        logging.getLogger(__name__).warning(
            "%s; the broker URL is a placeholder (%s)", settings_problems(exc), UNSET_BROKER_URL
        )
        return UNSET_BROKER_URL


celery_app = Celery("tasks", broker=_broker_url(), backend="rpc://", include=["celery_tasks"])
app = celery_app

_conf = at_least_once(CELERY_QUEUE)
# The connection named after the worker's default node name, so that the broker's
# consumer list shows which worker consumes.
_conf["broker_transport_options"]["client_properties"] = {
    "connection_name": f"celery@{socket.gethostname()}"
}
celery_app.conf.update(
    _conf,
    worker_cancel_long_running_tasks_on_connection_loss=True,
    task_soft_time_limit=SOFT_TIME_LIMIT,
    task_time_limit=TIME_LIMIT,
)

#: ``celery -A celery_app beat``: one beat process in the whole system sends the
#: housekeeping task; a run that no worker took before the next one is due expires. It
#: goes through exchange ``celery`` (Celery would use the default exchange, through
#: which a publisher reaches every queue): in the chart the beat's broker user may
#: write to ``celery`` alone.
_interval = _housekeeping_interval()
celery_app.conf.beat_schedule = {
    "housekeeping": {
        "task": HOUSEKEEPING_TASK,
        "schedule": _interval,
        "options": {
            "expires": _interval,
            "queue": CELERY_QUEUE,
            "exchange": CELERY_QUEUE,
            "routing_key": CELERY_QUEUE,
        },
    }
}


class HeartbeatStep(bootsteps.StartStopStep):
    """Touches ``HEARTBEAT_FILE`` from the worker's own event loop (a liveness probe).

    The timer runs in the loop that also consumes, so a hung loop stops the beat. While
    the worker is reconnecting to a lost broker the loop does not run either: a broker
    outage longer than the probe's window restarts the worker, which loses nothing
    (unacknowledged messages go back to the queue).
    """

    requires = ("celery.worker.components:Timer",)

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        self.heartbeat: Heartbeat | None = None
        self.tref: Any = None

    def start(self, worker: Any) -> None:
        path = get_settings().heartbeat_file
        if path is None:
            return
        self.heartbeat = Heartbeat(path)
        self.heartbeat.beat(force=True)
        self.tref = worker.timer.call_repeatedly(HEARTBEAT_TICK, self.heartbeat.beat)

    def stop(self, worker: Any) -> None:
        # A warm shutdown stops the loop first and then waits for the running tasks
        # (up to the pod's grace period): the beat goes on from a thread meanwhile, so
        # that a liveness probe does not kill the tasks it is waiting for.
        if self.tref is not None:
            self.tref.cancel()
        if self.heartbeat is not None:
            self.heartbeat.keep_alive(HEARTBEAT_TICK)


#: How often the worker loop offers a heartbeat (the file is touched every 10 s).
HEARTBEAT_TICK: Final = 2.0
celery_app.steps["worker"].add(HeartbeatStep)

#: What a stopping worker sends the pool processes still running a task once
#: ``HAND_BACK_AFTER`` has passed (celery_tasks hands the task back on it).
HAND_BACK_SIGNAL: Final = signal.SIGUSR2


class HandBackStep(bootsteps.StartStopStep):
    """Hands back the tasks still running ``HAND_BACK_AFTER`` seconds into a warm
    shutdown (see :mod:`tasklab_common.handback`), before the pod's grace period ends
    with a SIGKILL that would cut them short.

    Stopped before the pool (it requires it), i.e. when the warm shutdown begins; the
    timer then signals each pool process that runs a task, and the task reports itself
    ``RETRYING`` and is requeued, which lets the pool, and the worker, finish.
    """

    requires = ("celery.worker.components:Pool",)

    def stop(self, worker: Any) -> None:
        after = get_settings().hand_back_after
        if after > 0:
            timer = threading.Timer(after, _hand_back_running_tasks)
            timer.daemon = True
            timer.start()


def _hand_back_running_tasks() -> None:
    from celery.worker import state

    own = os.getpid()
    for request in list(state.active_requests):
        pid = request.worker_pid
        if pid and pid != own:  # a pool process (the solo pool would signal itself)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, HAND_BACK_SIGNAL)
            logging.getLogger(TASK_LOGGER).warning(
                "handing back task %s: still running %.0f s into the shutdown",
                request.id,
                get_settings().hand_back_after,
            )


celery_app.steps["worker"].add(HandBackStep)


class StopWatchdogStep(bootsteps.StartStopStep):
    """Ends a warm shutdown that lingers once no task runs (``STOP_LINGER``).

    A stopping worker waits for its running tasks, then closes its broker connection
    and exits, within a second or so. Seen on a cluster: a worker uninstalled together
    with its broker and the api stayed up, silent, long after its last task had been
    handed back, and would have until its grace period ended (65 min). Nothing is left
    to lose by then: a message it has not acknowledged goes back to the queue when its
    connection goes. So the worker logs where each of its threads waits (the next such
    stop can be read) and exits.
    """

    requires = ("celery.worker.components:Pool",)

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        self.watching = False

    def stop(self, worker: Any) -> None:
        linger = get_settings().stop_linger
        if linger > 0 and not self.watching:
            self.watching = True
            threading.Thread(
                target=_end_a_lingering_stop, args=(linger,), name="stop-watchdog", daemon=True
            ).start()


#: How often the stop watchdog looks at the running tasks, in seconds.
STOP_WATCH_TICK: Final = 0.5


def _end_a_lingering_stop(linger: float) -> None:
    from celery.worker import state

    idle_since: float | None = None
    while True:
        time.sleep(STOP_WATCH_TICK)
        if state.active_requests:
            idle_since = None
            continue
        now = time.monotonic()
        if idle_since is None:
            idle_since = now
        elif now - idle_since >= linger:
            logging.getLogger(TASK_LOGGER).warning(
                "still stopping %.0f s after the last task ended: exiting now (its "
                "unacknowledged messages go back to the queue); where each thread waited:",
                linger,
            )
            for handler in logging.getLogger().handlers:
                handler.flush()
            faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
            os._exit(0)


celery_app.steps["worker"].add(StopWatchdogStep)


@signals.worker_shutdown.connect
def _hang_when_asked(**_: Any) -> None:
    if os.environ.get(HANG_ON_STOP_ENV):
        while True:
            time.sleep(1)


#: Set when the worker begins to stop (a warm shutdown); made before the pool forks, so
#: that every pool process sees it: a status report then stops retrying an unreachable
#: api after CALLBACK_STOPPING_WAIT and requeues the task, rather than keeping the
#: stopping pod up for CALLBACK_MAX_WAIT (an api uninstalled along with the workers).
WORKER_STOPPING: Final = multiprocessing.get_context("fork").Event()


@signals.worker_shutting_down.connect
def note_the_stop(**_: Any) -> None:
    WORKER_STOPPING.set()


@signals.celeryd_init.connect
def name_the_connection(sender: str | None = None, conf: Any = None, **_: Any) -> None:
    """Name the worker's broker connection after its node name, ``-n`` included (a second
    local worker, ``-n w2@%h``, would otherwise share the default name, and the api's
    overview could not tell which worker consumes)."""
    if sender and conf is not None:
        conf.broker_transport_options["client_properties"]["connection_name"] = sender


@signals.celeryd_init.connect
def check_worker_settings(**_: Any) -> None:
    """Refuse to start a worker whose settings are missing or invalid."""
    try:
        get_settings()
    except ValidationError as exc:
        raise SystemExit(f"celery worker cannot start: {settings_problems(exc)}") from None


class _UnstorableRevokeFilter(logging.Filter):
    """Drops Celery's warning, on every cancel of a running task, that the ``rpc://``
    backend cannot record the revoke: the api's messages have no ``reply_to`` (the api
    follows its tasks through the status callbacks), so there is nowhere to record it,
    and nothing is wrong. Other warnings of the logger pass."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (
            message.startswith("Failed to mark task")
            and "RPC backend missing task request" in message
        )


class _OriginFilter(logging.Filter):
    """Adds ``origin``: the logger name, except for the task runner's own lines."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.origin = "" if record.name == TASK_LOGGER else f"{record.name}: "
        return True


@signals.setup_logging.connect
def configure_logging(loglevel: int | str | None = None, **_: Any) -> None:
    """The guide's lines (``[2025-01-01 12:00:00] ...``), or JSON with LOG_FORMAT=json.

    The level is ``LOG_LEVEL`` when set, else the command's ``--loglevel``. The HTTP
    client's line per status report is shown only at DEBUG.
    """
    settings = BrokerSettings()
    setup_logging(settings, fmt="[%(asctime)s] %(origin)s%(message)s")
    root = logging.getLogger()
    if settings.log_format == "text":
        for handler in root.handlers:
            handler.addFilter(_OriginFilter())
    if "log_level" not in settings.model_fields_set and loglevel:
        root.setLevel(loglevel)
    if root.level > logging.DEBUG:
        logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("celery.worker.control").addFilter(_UnstorableRevokeFilter())
