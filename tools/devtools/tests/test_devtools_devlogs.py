"""``make logs``: make dev's per-service log files, followed like ``docker compose logs -f``."""

from __future__ import annotations

import io
import os
import sys
import threading
from pathlib import Path

import pytest

from tasklab_devtools import devlogs
from tasklab_devtools.procs import ManagedProcess
from tasklab_devtools.stack import StackConfig, api_process, celery_process, consumer_process
from tasklab_devtools.waiting import wait_until


def python(code: str) -> list[str]:
    return [sys.executable, "-u", "-c", code]


def test_make_dev_copies_each_services_output_to_its_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The terminal keeps the prefixed lines; the file gets them as the service wrote them,
    afresh at the first start and appended to across restarts."""
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    copy = tmp_path / "logs" / "svc.log"
    copy.parent.mkdir()
    copy.write_text("from an earlier make dev\n")
    proc = ManagedProcess(
        "svc", python("print('Task 7 started'); print('Task 7 finished')"), dict(os.environ),
        copy_path=copy,
    )  # fmt: skip
    proc.start()
    assert proc.wait(10) == 0
    proc.terminate()
    assert copy.read_text() == "Task 7 started\nTask 7 finished\n"
    assert "svc | Task 7 started\n" in capsys.readouterr().out
    proc.start()
    proc.wait(10)
    proc.terminate()
    assert copy.read_text().count("Task 7 started") == 2


def test_the_stack_of_make_dev_names_one_file_per_service(tmp_path: Path) -> None:
    cfg = StackConfig(
        rmq_url="amqp://u:p@127.0.0.1:1/",
        database_url="sqlite://",
        callback_secret="x",
        log_copy_dir=tmp_path,
    )
    for make, name in ((api_process, "api"), (celery_process, "celery-worker"),
                       (consumer_process, "consumer")):  # fmt: skip
        proc = make(cfg)
        assert proc.log_path is None and proc.copy_path == tmp_path / f"{name}.log"
    # The tests' stacks log to files of their own: no copies.
    cfg.log_dir = tmp_path / "own"
    assert api_process(cfg).copy_path is None


def test_follow_prints_the_end_then_what_is_written_also_after_a_new_make_dev(
    tmp_path: Path,
) -> None:
    log = tmp_path / "celery-worker.log"
    log.write_text("".join(f"old {n}\n" for n in range(100)))
    out, stop = io.StringIO(), threading.Event()
    reader = threading.Thread(
        target=devlogs.follow, args=({"celery-worker": log}, out),
        kwargs={"lines": 3, "stop": stop.is_set},
    )  # fmt: skip
    reader.start()
    try:
        wait_until(lambda: out.getvalue() == "old 97\nold 98\nold 99\n", "the last lines", 5)
        with log.open("a") as f:
            f.write("Task 12 started\nTask 12 fin")  # a line written in two parts
        wait_until(lambda: out.getvalue().endswith("Task 12 started\n"), "a new line", 5)
        with log.open("a") as f:
            f.write("ished\n")
        wait_until(lambda: out.getvalue().endswith("Task 12 finished\n"), "its end", 5)
        log.write_text("fresh start\n")  # the next make dev truncates it
        wait_until(lambda: out.getvalue().endswith("fresh start\n"), "after truncation", 5)
    finally:
        stop.set()
        reader.join(5)
    assert "old 96" not in out.getvalue()


def test_all_services_are_prefixed_and_unknown_ones_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert devlogs.main(["--dir", str(tmp_path), "--no-follow"]) == 1
    assert "start the stack with make dev" in capsys.readouterr().err
    (tmp_path / "api.log").write_text("GET /readyz 200\n")
    (tmp_path / "consumer.log").write_text("Task 3 finished\n")
    assert devlogs.main(["--dir", str(tmp_path), "--no-follow"]) == 0
    assert capsys.readouterr().out == "api      | GET /readyz 200\nconsumer | Task 3 finished\n"
    assert devlogs.main(["celery_worker", "--dir", str(tmp_path), "--no-follow"]) == 2
    assert "services: api, consumer" in capsys.readouterr().err
    assert devlogs.main(["consumer", "--dir", str(tmp_path), "--no-follow", "-n", "5"]) == 0
    assert capsys.readouterr().out == "Task 3 finished\n"
