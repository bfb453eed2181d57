"""StackConfig, the service commands, and LocalStack with a process of our own."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from tasklab_devtools.procs import ManagedProcess, group_pids
from tasklab_devtools.stack import (
    LocalStack,
    StackConfig,
    api_process,
    celery_process,
    consumer_process,
)

BIN = Path(sys.executable).parent


def config(**overrides: Any) -> StackConfig:
    return StackConfig(
        rmq_url="amqp://u:p@127.0.0.1:5999/",
        database_url="sqlite:///x.db",
        callback_secret="s" * 40,
        **overrides,
    )


def test_urls_and_environment(tmp_path: Path) -> None:
    cfg = config(api_port=9123, api_host="0.0.0.0", extra_env={"LOG_LEVEL": "DEBUG"})
    assert cfg.api_base_url == "http://127.0.0.1:9123"
    assert cfg.api_callback_url == "http://127.0.0.1:9123/update_task_status_api/"
    env = cfg.env()
    assert env["RMQ_URL"] == cfg.rmq_url
    assert env["API_URL"] == cfg.api_callback_url
    assert env["CALLBACK_SECRET"] == cfg.callback_secret
    assert env["DATABASE_URL"] == "sqlite:///x.db"
    assert (env["API_HOST"], env["API_PORT"]) == ("0.0.0.0", "9123")
    assert env["CONSUMER_CONCURRENCY"] == "3"
    assert env["LOG_LEVEL"] == "DEBUG"
    assert "PATH" in env  # our environment is inherited
    assert config(extra_env={"RMQ_URL": "amqp://x@h/"}).env()["RMQ_URL"] == "amqp://x@h/"
    assert "API_INTERNAL_PORT" not in env


def test_the_chart_layout_internal_port_and_a_broker_user_per_service() -> None:
    """As the chart runs them: the workers call the api's internal port, and each
    service logs in to the broker as its own user."""
    own = {"celery-worker": "amqp://w:p@h/", "consumer": "amqp://c:p@h/"}
    cfg = config(api_port=9123, api_internal_port=9124, rmq_urls=own)
    assert cfg.api_callback_url == "http://127.0.0.1:9124/update_task_status_api/"
    assert cfg.env()["API_INTERNAL_PORT"] == "9124"
    assert api_process(cfg).env["RMQ_URL"] == cfg.rmq_url  # no URL of its own: the shared one
    assert celery_process(cfg).env["RMQ_URL"] == own["celery-worker"]
    assert consumer_process(cfg).env["RMQ_URL"] == own["consumer"]
    assert consumer_process(cfg).env["API_URL"] == cfg.api_callback_url


def test_service_commands_are_the_image_commands(tmp_path: Path) -> None:
    cfg = config(log_dir=tmp_path, celery_concurrency=2, cwd=tmp_path)

    api = api_process(cfg, name="api-2", port=9124)
    assert api.argv == [str(BIN / "tasklab-api")]
    assert api.env["API_PORT"] == "9124"
    assert api.log_path == tmp_path / "api-2.log"
    assert api.cwd == tmp_path

    worker = celery_process(cfg)
    assert worker.name == "celery-worker"
    assert worker.argv == [
        str(BIN / "celery"),
        *("-A", "celery_app", "worker", "--loglevel=info", "--concurrency=2"),
    ]
    named = celery_process(cfg, name="w2", concurrency=1, node_name="w2")
    assert named.argv[-3:] == ["--concurrency=1", "-n", "w2@%h"]

    consumer = consumer_process(config())
    assert consumer.argv == [str(BIN / "tasklab-consumer")]
    assert consumer.log_path is None


def test_local_stack_supervises_added_processes(tmp_path: Path) -> None:
    stack = LocalStack(config(log_dir=tmp_path))
    extra = stack.add(
        ManagedProcess(
            "extra",
            [sys.executable, "-c", "import time; print('up', flush=True); time.sleep(60)"],
            {},
            log_path=tmp_path / "extra.log",
        )
    )
    stack.start(api=False, celery=False, consumer=False)
    assert list(stack.processes) == ["extra"]
    assert extra.running()
    stack.stop(timeout=5)
    assert not extra.running()
    assert extra.pid is not None
    assert group_pids(extra.pid) == []
