"""CPU and memory of process trees, read from /proc, against real processes."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator

import pytest

from bench.procstat import CpuAccount, Service, cpu_seconds, rss_bytes, scan

BURN = "import time\nend = time.process_time() + {seconds}\nwhile time.process_time() < end: pass\n"


def python(code: str, start_new_session: bool = False) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        start_new_session=start_new_session,
    )


@pytest.fixture
def parent() -> Iterator[subprocess.Popen[bytes]]:
    """A process that, on each line read, starts a child burning 0.4 s of CPU; "w" after
    the line: it also waits for (reaps) the child; it answers with the child's pid."""
    code = f"""
        import subprocess, sys
        for line in sys.stdin:
            child = subprocess.Popen([sys.executable, "-c", {BURN.format(seconds=0.4)!r}])
            if line.strip() == "w":
                child.wait()
            print(child.pid, flush=True)
    """
    proc = python(code, start_new_session=True)
    yield proc
    proc.kill()
    proc.wait()


def ask(proc: subprocess.Popen[bytes], line: str) -> int:
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(line.encode() + b"\n")
    proc.stdin.flush()
    return int(proc.stdout.readline())


def wait_zombie(pid: int) -> None:
    deadline = time.monotonic() + 20
    while (proc := scan().get(pid)) is not None and proc.live:
        assert time.monotonic() < deadline
        time.sleep(0.02)


@pytest.mark.parametrize("tree", [False, True], ids=["group", "tree"])
def test_a_child_that_ended_and_was_reaped_inside_the_window_is_counted(
    parent: subprocess.Popen[bytes], tree: bool
) -> None:
    service = Service(lambda: parent.pid, tree=tree)
    account = CpuAccount({"svc": service})
    account.begin()
    child = ask(parent, "w")  # started, burnt 0.4 s, ended and reaped: all inside
    assert child not in scan()
    account.end()
    assert 0.35 <= account.used["svc"] < 1.5


def test_a_zombie_child_is_counted(parent: subprocess.Popen[bytes]) -> None:
    service = Service(lambda: parent.pid, tree=True)
    before = cpu_seconds(service)
    child = ask(parent, "")  # not reaped: a zombie once it ends
    wait_zombie(child)
    assert cpu_seconds(service) - before >= 0.35


def test_windows_add_up_and_a_late_service_starts_when_begun() -> None:
    first = python(
        "import sys\nfor line in sys.stdin:\n"
        + textwrap.indent(BURN.format(seconds=0.3), "    ")
        + "    print(1, flush=True)\n"
    )
    second = python(
        "import sys\nfor line in sys.stdin:\n"
        + textwrap.indent(BURN.format(seconds=0.3), "    ")
        + "    print(1, flush=True)\n"
    )
    try:
        account = CpuAccount(
            {
                "first": Service(lambda: first.pid, tree=True),
                "second": Service(lambda: second.pid, tree=True),
            }
        )
        account.begin(["first"])
        ask(first, "")
        ask(second, "")  # not counted: "second" has not begun
        account.end()
        ask(first, "")  # between windows: not counted
        account.begin()
        ask(first, "")
        ask(second, "")
        account.end()
        assert 0.55 <= account.used["first"] < 0.9
        assert 0.25 <= account.used["second"] < 0.45
        assert account.total == pytest.approx(account.used["first"] + account.used["second"])
    finally:
        for proc in (first, second):
            proc.kill()
            proc.wait()


def test_rss_counts_live_processes_only(parent: subprocess.Popen[bytes]) -> None:
    service = Service(lambda: parent.pid)
    child = ask(parent, "")  # burns 0.4 s: alive for now
    table = scan()
    assert table[child].live
    assert rss_bytes(service, table) == table[parent.pid].rss + table[child].rss
    wait_zombie(child)
    table = scan()
    assert rss_bytes(service, table) == table[parent.pid].rss > 1 << 20
    assert rss_bytes(Service(lambda: None)) == 0
    assert cpu_seconds(Service(lambda: os.getpid() + 10**7)) == 0
