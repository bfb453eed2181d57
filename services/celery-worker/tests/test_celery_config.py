"""The Celery application's configuration, task names and signatures, and log format."""

from __future__ import annotations

import inspect
import json
import logging
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

import celery_app
import celery_tasks
from tasklab_common.messages import MAX_DURATION_SECONDS
from tasklab_common.models import TaskKind
from tasklab_common.queues import CELERY_QUEUE

conf = celery_app.celery_app.conf


def test_app_keeps_the_guides_names() -> None:
    assert celery_app.app is celery_app.celery_app
    assert celery_app.celery_app.main == "tasks"
    assert list(conf.include) == ["celery_tasks"]
    assert conf.result_backend == "rpc://"


def test_messages_are_acknowledged_only_after_the_task_ran() -> None:
    assert conf.task_acks_late is True
    assert conf.task_reject_on_worker_lost is True
    assert conf.worker_prefetch_multiplier == 1
    assert conf.broker_transport_options["confirm_publish"] is True
    # The broker lists the worker's connection under the worker's default node name
    # (a worker started with -n renames it: tests/e2e, the second local worker).
    name = conf.broker_transport_options["client_properties"]["connection_name"]
    assert name == f"celery@{socket.gethostname()}"
    assert conf.broker_connection_retry_on_startup is True
    assert conf.worker_cancel_long_running_tasks_on_connection_loss is True
    for name in TaskKind:
        task = celery_app.celery_app.tasks[name.value]
        assert task.acks_late is True
        assert task.reject_on_worker_lost is True


def test_json_only() -> None:
    assert conf.task_serializer == "json"
    assert conf.result_serializer == "json"
    assert list(conf.accept_content) == ["json"]
    assert list(conf.result_accept_content) == ["json"]


def test_default_queue_matches_the_apis_declaration() -> None:
    assert conf.task_default_queue == CELERY_QUEUE
    assert conf.task_default_routing_key == CELERY_QUEUE
    (queue,) = conf.task_queues
    assert queue.name == CELERY_QUEUE
    assert queue.routing_key == CELERY_QUEUE
    assert queue.durable is True
    assert not queue.queue_arguments
    assert queue.exchange.name == CELERY_QUEUE


def test_time_limits_leave_room_for_the_longest_task() -> None:
    assert MAX_DURATION_SECONDS < conf.task_soft_time_limit < conf.task_time_limit


def test_beat_schedules_housekeeping_that_expires() -> None:
    (entry,) = conf.beat_schedule.values()
    assert entry["task"] == "tasklab.housekeeping"
    assert entry["task"] in celery_app.celery_app.tasks
    assert entry["schedule"] == celery_app.BeatSettings().housekeeping_interval
    assert entry["options"]["expires"] == entry["schedule"]
    # Through the celery exchange, not the default one (the beat's broker user may
    # write to nothing else: tests/chart/test_broker_users.py).
    exchange, key, queue = (entry["options"][k] for k in ("exchange", "routing_key", "queue"))
    assert (exchange, key, queue) == (CELERY_QUEUE, CELERY_QUEUE, CELERY_QUEUE)


def test_registered_tasks_have_the_guides_names_and_signatures() -> None:
    registered = {name for name in celery_app.celery_app.tasks if not name.startswith("celery.")}
    assert registered == {"process_task", "process_data", "tasklab.housekeeping"}
    task_params = inspect.signature(celery_tasks.process_task.run).parameters
    assert list(task_params) == ["task_num", "timeout", "worker_id", "method", "fail_times"]
    assert task_params["worker_id"].default == "celery"
    data_params = inspect.signature(celery_tasks.process_data.run).parameters
    assert list(data_params)[:3] == ["task_num", "numbers", "worker_id"]
    assert data_params["duration"].kind is inspect.Parameter.KEYWORD_ONLY


@pytest.fixture
def root_logging(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[logging.Logger]:
    """The root logger, restored afterwards; the broker URL set, no ``.env`` file."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RMQ_URL", "amqp://guest:guest@127.0.0.1:5672/")
    for name in ("LOG_FORMAT", "LOG_LEVEL"):
        monkeypatch.delenv(name, raising=False)
    root = logging.getLogger()
    httpx_logger = logging.getLogger("httpx")
    handlers, level, httpx_level = root.handlers[:], root.level, httpx_logger.level
    try:
        yield root
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        httpx_logger.setLevel(httpx_level)


def emit_sample_lines() -> None:
    logging.getLogger("celery.worker.strategy").info("Task process_task[abc] received")
    logging.getLogger(celery_app.TASK_LOGGER).info(
        "Celery Worker celery: Started processing task 1", extra={"task_id": "abc"}
    )


def test_text_logs_read_like_the_guide(
    root_logging: logging.Logger, capsys: pytest.CaptureFixture[str]
) -> None:
    celery_app.configure_logging(loglevel=logging.INFO)
    emit_sample_lines()

    stamp = r"\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\] "
    first, second = capsys.readouterr().err.splitlines()
    assert re.fullmatch(
        stamp + re.escape("celery.worker.strategy: Task process_task[abc] received"), first
    )
    assert re.fullmatch(stamp + "Celery Worker celery: Started processing task 1", second)
    assert root_logging.level == logging.INFO
    assert logging.getLogger("httpx").level == logging.WARNING


def test_json_logs_carry_the_task_fields(
    root_logging: logging.Logger,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LOG_FORMAT", "json")
    celery_app.configure_logging(loglevel=logging.INFO)
    emit_sample_lines()

    records = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [r["logger"] for r in records] == ["celery.worker.strategy", celery_app.TASK_LOGGER]
    assert records[1]["msg"] == "Celery Worker celery: Started processing task 1"
    assert records[1]["task_id"] == "abc"


def test_log_level_setting_wins_over_the_command_line(
    root_logging: logging.Logger, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOG_LEVEL", "WARNING")
    celery_app.configure_logging(loglevel=logging.DEBUG)
    assert root_logging.level == logging.WARNING
