"""``--profile``: py-spy recordings of the processes on the status path, and their
CPU per thread.

For each recording ``<name>`` the profile folder gets:

- ``<name>.txt``: the collapsed stacks (py-spy's ``raw`` format, for any flame-graph
  viewer), samples of threads holding the GIL only (the Python work: otherwise a
  thread waiting for work that is ready to run but waits for a core of a crowded
  machine would count as running; C code that releases the GIL, such as SQLite's
  statements and socket I/O, is not in the samples);
- ``<name>-top.txt``: the functions with the most samples, self and inclusive;
- ``<name>-parts.txt``: the samples by part of the status path (:mod:`bench.breakdown`);
- ``<name>-threads.txt``: the CPU seconds each thread of each process used while
  recording, from ``/proc`` (all of it, C code included), named as Python names them.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from bench.breakdown import render, stacks
from bench.common import Context, say
from bench.procstat import Service, scan
from tasklab_devtools.stack import venv_command

__all__ = ["profile", "summarize_profile", "thread_cpu"]

_TICKS = os.sysconf("SC_CLK_TCK")


def thread_cpu(pids: list[int]) -> dict[tuple[int, int], float]:
    """CPU seconds (utime + stime) of every thread of ``pids``, by (pid, tid)."""
    out: dict[tuple[int, int], float] = {}
    for pid in pids:
        try:
            tids = [int(entry.name) for entry in Path(f"/proc/{pid}/task").iterdir()]
        except OSError:
            continue
        for tid in tids:
            try:
                raw = Path(f"/proc/{pid}/task/{tid}/stat").read_bytes()
            except OSError:
                continue
            fields = raw[raw.rindex(b")") + 2 :].split()
            out[(pid, tid)] = (int(fields[11]) + int(fields[12])) / _TICKS
    return out


def _thread_names(pid: int) -> dict[int, str]:
    """Python's names of the threads of ``pid`` (py-spy dump), by OS thread id."""
    done = subprocess.run(
        [venv_command("py-spy"), "dump", "--pid", str(pid), "--json", "--nonblocking"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    try:
        threads = json.loads(done.stdout)
    except ValueError:
        return {}
    return {
        int(thread["os_thread_id"]): str(thread.get("thread_name") or "?")
        for thread in threads
        if thread.get("os_thread_id")
    }


def _threads_report(
    root: int, before: dict[tuple[int, int], float], after: dict[tuple[int, int], float]
) -> str:
    names: dict[int, dict[int, str]] = {}
    used: dict[str, float] = {}
    for (pid, tid), seconds in after.items():
        if pid not in names:
            names[pid] = _thread_names(pid)
        process = "main process" if pid == root else f"child {pid}"
        label = f"{process}: {names[pid].get(tid, f'thread {tid} (not Python)')}"
        used[label] = used.get(label, 0.0) + seconds - before.get((pid, tid), 0.0)
    total = sum(used.values())
    lines = [f"CPU seconds while recording: {total:.2f}"]
    lines += [
        f"{seconds:8.2f} s {100 * seconds / max(total, 1e-9):5.1f} %  {label}"
        for label, seconds in sorted(used.items(), key=lambda item: -item[1])
        if seconds > 0
    ]
    return "\n".join(lines) + "\n"


@contextlib.contextmanager
def profile(ctx: Context, name: str, pid: int | None, subprocesses: bool = False) -> Iterator[None]:
    """Record ``pid`` (and its children with ``subprocesses``) while the block runs;
    only with ``--profile``. See the module's docstring for what is written."""
    if ctx.profile_dir is None or pid is None:
        yield
        return
    ctx.profile_dir.mkdir(parents=True, exist_ok=True)
    raw = ctx.profile_dir / f"{name}.txt"
    argv = [
        venv_command("py-spy"),
        "record",
        "--pid",
        str(pid),
        "--rate",
        "200",
        "--format",
        "raw",
        "--output",
        str(raw),
        "--nonblocking",
        "--gil",
    ]
    if subprocesses:
        argv.append("--subprocesses")
    service = Service(lambda: pid, tree=True)
    spy = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(0.5)  # let it attach
    pids = [proc.pid for proc in service.procs(scan()) if proc.live]
    before = thread_cpu(pids)
    try:
        yield
    finally:
        after = thread_cpu([proc.pid for proc in service.procs(scan()) if proc.live])
        spy.send_signal(signal.SIGINT)
        try:
            _, err = spy.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            spy.kill()
            _, err = spy.communicate()
        (ctx.profile_dir / f"{name}-threads.txt").write_text(_threads_report(pid, before, after))
        if raw.exists():
            (ctx.profile_dir / f"{name}-top.txt").write_text(summarize_profile(raw))
            (ctx.profile_dir / f"{name}-parts.txt").write_text(render(raw))
            say(f"profile of {name}: {raw}")
        else:
            say(f"py-spy wrote no profile for {name}: {err.decode(errors='replace')[-500:]}")


def _function(frame: str) -> str:
    """``handler (tasklab_api/x.py:12)`` → ``handler (tasklab_api/x.py)``."""
    head, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", "/src/", "lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{head} ({path})" if where else head


def summarize_profile(raw: Path, top: int = 40) -> str:
    """Self and inclusive sample counts per function of a py-spy ``raw`` profile."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for stack, count in stacks(raw):
        total += count
        frames = [_function(frame) for frame in stack]
        own[frames[-1]] += count
        for fn in set(frames):
            inclusive[fn] += count
    lines = [f"samples: {total}", "", "self (leaf) samples:"]
    lines += [f"{n:8d} {100 * n / max(total, 1):5.1f}%  {f}" for f, n in own.most_common(top)]
    lines += ["", "inclusive samples:"]
    lines += [f"{n:8d} {100 * n / max(total, 1):5.1f}%  {f}" for f, n in inclusive.most_common(top)]
    return "\n".join(lines) + "\n"
