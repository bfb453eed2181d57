"""The .env and state folder handling of ``tasklab-dev``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tasklab_devtools.dev import hold_instance_lock, main, make_private, read_dotenv, update_dotenv


def test_dotenv_is_read_and_updated_in_place(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(
        "# local settings\n"
        "export LOG_LEVEL=DEBUG\n"
        "RMQ_URL='amqp://a:b@127.0.0.1:5673/'\n"
        "\n"
        'API_URL="http://localhost:8080/update_task_status_api/"\n'
    )
    assert read_dotenv(env_file) == {
        "LOG_LEVEL": "DEBUG",
        "RMQ_URL": "amqp://a:b@127.0.0.1:5673/",
        "API_URL": "http://localhost:8080/update_task_status_api/",
    }

    update_dotenv(env_file, {"RMQ_URL": "amqp://c:d@127.0.0.1:5673/", "CALLBACK_SECRET": "x" * 43})

    lines = env_file.read_text().splitlines()
    assert lines[0] == "# local settings"
    assert lines[2] == "RMQ_URL=amqp://c:d@127.0.0.1:5673/"
    assert lines[-1] == "CALLBACK_SECRET=" + "x" * 43
    assert read_dotenv(env_file)["LOG_LEVEL"] == "DEBUG"
    assert env_file.stat().st_mode & 0o777 == 0o600


def test_missing_dotenv(tmp_path: Path) -> None:
    assert read_dotenv(tmp_path / ".env") == {}
    update_dotenv(tmp_path / ".env", {"A": "1"})
    assert read_dotenv(tmp_path / ".env") == {"A": "1"}


def test_the_dev_state_is_the_users_alone(tmp_path: Path) -> None:
    state = tmp_path / ".dev"
    (state / "rabbitmq").mkdir(parents=True, mode=0o755)
    (state / "tasklab.db").write_text("")
    (state / "rabbitmq" / "users").write_text("hash")
    env = tmp_path / ".env"
    env.write_text("CALLBACK_SECRET=x\n")
    for path in (state / "tasklab.db", state / "rabbitmq" / "users", env):
        path.chmod(0o644)
    make_private(state, env)
    modes = {p.relative_to(tmp_path).as_posix(): p.stat().st_mode & 0o777
             for p in [state, *state.rglob("*"), env]}  # fmt: skip
    assert modes == {".dev": 0o700, ".dev/rabbitmq": 0o700, ".dev/tasklab.db": 0o600,
                     ".dev/rabbitmq/users": 0o600, ".env": 0o600}  # fmt: skip


def test_a_second_make_dev_leaves_the_running_one_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """It used to stop the first one's broker as a leftover, then die on the port in
    use; now it says so and exits before touching anything."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".dev").mkdir()
    first = hold_instance_lock(tmp_path / ".dev" / "dev.lock")
    assert first is not None
    umask = os.umask(0o022)  # main() sets the process's umask: give it back after
    try:
        assert main([]) == 1
        assert "already running" in capsys.readouterr().err
        assert not (tmp_path / ".dev" / "rabbitmq").exists()
    finally:
        os.umask(umask)
        first.close()
    again = hold_instance_lock(tmp_path / ".dev" / "dev.lock")
    assert again is not None  # free once the first one ends
    again.close()
