"""ManagedProcess and Supervisor against real processes (checked through /proc)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tasklab_devtools.procs import (
    ManagedProcess,
    Supervisor,
    free_port,
    group_pids,
    wait_http_ok,
)

PY = sys.executable


def python(code: str) -> list[str]:
    return [PY, "-c", textwrap.dedent(code)]


def alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (zombies count as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    return not stat[stat.rindex(b")") + 2 :].startswith(b"Z")


def wait_for(condition: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_terminate_kills_a_group_that_ignores_sigterm(tmp_path: Path) -> None:
    stubborn = """
        import signal, subprocess, sys, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        child = subprocess.Popen([sys.executable, "-c",
            "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(120)"])
        print("child", child.pid, flush=True)
        time.sleep(120)
    """
    proc = ManagedProcess(
        "stubborn", python(stubborn), dict(os.environ), log_path=tmp_path / "s.log"
    )
    proc.start()
    wait_for(lambda: "child" in proc.log_text())
    child = int(proc.log_text().split()[1])
    assert proc.pid is not None
    pgid = proc.pid
    assert group_pids(pgid) == sorted([pgid, child])

    began = time.monotonic()
    code = proc.terminate(timeout=1)
    elapsed = time.monotonic() - began

    assert code == -signal.SIGKILL
    assert 1 <= elapsed < 10
    assert group_pids(pgid) == []
    assert not alive(child)
    assert not proc.running()


def test_output_is_prefixed_with_the_name(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    proc = ManagedProcess("echo", python("print('hello'); print('world')"), dict(os.environ))
    proc.start()
    assert proc.wait(10) == 0
    proc.terminate()  # also waits for the output to be copied
    out = capsys.readouterr().out
    assert "echo | hello\n" in out
    assert "echo | world\n" in out


def test_log_file_is_truncated_once_and_appended_on_restart(tmp_path: Path) -> None:
    log = tmp_path / "svc.log"
    log.write_text("from an earlier run\n")
    proc = ManagedProcess(
        "svc", python("import time; print('up', flush=True); time.sleep(60)"), {}, log_path=log
    )
    proc.start()
    first_pid = proc.pid
    wait_for(lambda: proc.log_text().count("up") == 1)
    assert "earlier run" not in proc.log_text()

    proc.restart(timeout=5)
    wait_for(lambda: proc.log_text().count("up") == 2)
    assert proc.pid != first_pid
    assert proc.running()
    assert proc.terminate(timeout=5) == -signal.SIGTERM
    assert proc.log_tail(1) == "up"


def test_children_pids_kill_and_kill_group(tmp_path: Path) -> None:
    parent = """
        import subprocess, sys, time
        kids = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
                for _ in range(2)]
        print("ready", flush=True)
        while True:
            for kid in kids:
                kid.poll()  # reap a killed child
            time.sleep(0.05)
    """
    proc = ManagedProcess("pool", python(parent), dict(os.environ), log_path=tmp_path / "p.log")
    proc.start()
    wait_for(lambda: "ready" in proc.log_text())
    kids = proc.children_pids()
    assert len(kids) == 2

    os.kill(kids[0], signal.SIGKILL)  # one pool child dies, the parent lives on
    wait_for(lambda: proc.children_pids() == [kids[1]])
    assert proc.running()

    proc.kill()  # the main process only: its remaining child stays in the group
    assert proc.wait(5) == -signal.SIGKILL
    assert proc.pid is not None
    pgid = proc.pid
    assert group_pids(pgid) == [kids[1]]

    proc.kill_group()
    wait_for(lambda: not group_pids(pgid) and not alive(kids[1]))
    proc.terminate(timeout=5)


def test_a_process_started_from_a_short_lived_thread_outlives_it(tmp_path: Path) -> None:
    proc = ManagedProcess("threaded", python("import time; time.sleep(60)"), {})
    starter = threading.Thread(target=proc.start)
    starter.start()
    starter.join()
    time.sleep(0.5)  # the parent-death signal would have arrived by now
    assert proc.running()
    assert proc.terminate(timeout=5) == -signal.SIGTERM


def test_supervisor_stops_everything_when_one_process_dies() -> None:
    sleeper = ManagedProcess("sleeper", python("import time; time.sleep(60)"), {})
    crasher = ManagedProcess(
        "crasher", python("import sys, time; time.sleep(0.5); sys.exit(3)"), {}
    )
    supervisor = Supervisor([sleeper, crasher])

    assert supervisor.run_forever(poll_interval=0.1) == 1

    assert crasher.returncode == 3
    assert not sleeper.running()
    assert sleeper.pid is not None
    assert group_pids(sleeper.pid) == []


SUPERVISED = """
import sys
from tasklab_devtools.procs import ManagedProcess, Supervisor

child = "import os, time; print('pid', os.getpid(), flush=True); time.sleep(120)"
supervisor = Supervisor(
    ManagedProcess(name, [sys.executable, "-c", child], {}) for name in ("one", "two")
)
sys.exit(supervisor.run_forever(poll_interval=0.1))
"""


def start_supervised(tmp_path: Path) -> tuple[subprocess.Popen[str], list[int]]:
    """A supervisor in its own Python process, and the pids of its two children."""
    script = tmp_path / "supervised.py"
    script.write_text(SUPERVISED)
    env = {**os.environ, "NO_COLOR": "1"}
    sup = subprocess.Popen([PY, str(script)], stdout=subprocess.PIPE, text=True, env=env)
    assert sup.stdout is not None
    pids = []
    for _ in range(2):
        line = sup.stdout.readline()  # "one | pid 1234"
        assert " | pid " in line, line
        pids.append(int(line.split()[-1]))
    return sup, pids


def test_ctrl_c_stops_the_supervisor_and_its_children(tmp_path: Path) -> None:
    sup, pids = start_supervised(tmp_path)
    sup.send_signal(signal.SIGINT)
    assert sup.wait(20) == 0
    assert not any(alive(pid) for pid in pids)


def test_children_stop_when_the_supervisor_is_killed(tmp_path: Path) -> None:
    sup, pids = start_supervised(tmp_path)
    sup.kill()
    sup.wait(5)
    wait_for(lambda: not any(alive(pid) for pid in pids))


def test_wait_http_ok(tmp_path: Path) -> None:
    port = free_port()
    server = ManagedProcess(
        "http",
        [PY, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        dict(os.environ),
        cwd=tmp_path,
        log_path=tmp_path / "http.log",
    )
    server.start()
    try:
        wait_http_ok(f"http://127.0.0.1:{port}/", 20, process=server)
    finally:
        server.terminate(timeout=5)
    with pytest.raises(TimeoutError, match="did not answer 200"):
        wait_http_ok(f"http://127.0.0.1:{port}/", 0.5)

    quitter = ManagedProcess("quitter", python("pass"), {})
    quitter.start()
    with pytest.raises(RuntimeError, match="quitter exited"):
        wait_http_ok(f"http://127.0.0.1:{port}/", 20, process=quitter)
    quitter.terminate()
