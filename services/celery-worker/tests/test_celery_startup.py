"""What the ``celery`` command does with missing settings, in real processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import celery_app

#: Settings a developer's shell or CI may hold; the tests choose them explicitly.
TASKLAB_VARIABLES = (
    "RMQ_URL",
    "API_URL",
    "CALLBACK_SECRET",
    "LOG_LEVEL",
    "LOG_FORMAT",
    "MAX_RETRIES",
    "REQUEUE_DELAY",
)


def run(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``python ARGS`` in ``cwd`` (no ``.env`` there) with only ``env`` set of ours."""
    clean = {k: v for k, v in os.environ.items() if k not in TASKLAB_VARIABLES}
    return subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_import_needs_no_settings(tmp_path: Path) -> None:
    done = run(
        ["-c", "import celery_tasks; print(celery_tasks.celery_app.conf.broker_url)"], tmp_path
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == celery_app.UNSET_BROKER_URL
    assert "RMQ_URL: not set" in done.stderr


def test_worker_refuses_to_start_without_callback_settings(tmp_path: Path) -> None:
    done = run(
        ["-m", "celery", "-A", "celery_app", "worker", "--loglevel=info"],
        tmp_path,
        RMQ_URL="amqp://guest:guest@127.0.0.1:1/",
    )

    assert done.returncode != 0
    assert done.stderr.strip().splitlines()[-1] == (
        "celery worker cannot start: CALLBACK_SECRET: not set; API_URL: not set"
    )


def test_worker_start_error_names_bad_values_without_echoing_them(tmp_path: Path) -> None:
    done = run(
        ["-m", "celery", "-A", "celery_app", "worker"],
        tmp_path,
        RMQ_URL="http://guest:guest@127.0.0.1:1/",
        API_URL="http://127.0.0.1:1/update_task_status_api/",
        CALLBACK_SECRET="tooshort9",
    )

    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("celery worker cannot start: RMQ_URL: RMQ_URL must look like amqp://")
    assert "CALLBACK_SECRET" in last
    assert "tooshort9" not in done.stderr
