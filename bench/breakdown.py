"""The parts of the status path in a py-spy profile: ``python -m bench.breakdown FILE...``.

Each sample of a ``--profile`` recording (``artifacts/bench-profiles/*.txt``, py-spy's
``raw`` format: one collapsed stack and its count per line) goes to the first part
whose pattern one of its frames matches, in the order of :data:`PARTS`; the output is
each part's share of the samples. Multiplied by the process's CPU per task from the
same run (``cpu_ms_per_task_by_service`` in ``results.json``), a share gives the
part's CPU per task, roughly: py-spy samples the threads that are not waiting, and on
a crowded machine a thread that is ready but waits for a core counts as running.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

__all__ = ["PARTS", "breakdown", "main"]

#: (part, patterns): a sample belongs to the first part one of whose patterns occurs
#: in one of its frames (``function (file:line)``).
PARTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    # The api.
    (
        "api: store writes (writer thread: SQLAlchemy, SQLite)",
        (
            "StoreWriter._transaction",
            "StoreWriter._grouped",
        ),
    ),
    ("api: store reads (the task polled)", ("TaskStore.get ", "TaskStore.list_tasks")),
    ("api: store reads, aiosqlite thread", ("_connection_worker_thread (aiosqlite",)),
    ("api: report signature check", ("read_signed (",)),
    ("api: live-stream notification", ("State.announce", "Hub.publish")),
    ("api: metrics", ("tasklab_api/metrics.py",)),
    ("api: callback route, the rest", ("update_task_status (",)),
    ("api: task read route, the rest", ("get_task (tasklab_api",)),
    ("logging", ("logging/__init__.py",)),
    # The workers' report client (a Celery pool process, the consumer).
    ("worker: report client, signing", ("sign_headers (",)),
    (
        "worker: report client, HTTP",
        ("tasklab_common/httpconn.py", "http/client.py", "email/", "httpx/", "httpcore/", "h11/"),
    ),
    ("worker: report client, the rest", ("CallbackClient.report",)),
    ("worker: status reports, the rest", ("celery_tasks.py", "tasklab_consumer/processing.py")),
    # Frameworks and plumbing.
    ("Celery: result backend", ("celery/backends/",)),
    ("Celery: task tracing", ("celery/app/trace.py",)),
    ("Celery: pool processes (billiard)", ("billiard/",)),
    (
        "AMQP client (kombu, amqp, pika, aio-pika, aiormq)",
        (
            "kombu/",
            "amqp/",
            "pika/",
            "aio_pika/",
            "aiormq/",
            "pamqp/",
        ),
    ),
    (
        "HTTP server (uvicorn, starlette, fastapi, middleware)",
        (
            "uvicorn/",
            "starlette/",
            "fastapi/",
            "tasklab_api/origin.py",
            "tasklab_api/limits.py",
            "tasklab_api/internalport.py",
            "h11_impl",
            "httptools_impl",
        ),
    ),
    ("thread-pool hand-offs", ("concurrent/futures/thread.py", "asyncio/futures.py")),
    ("pydantic", ("pydantic/",)),
    ("SQLAlchemy and database drivers (elsewhere)", ("sqlalchemy/", "psycopg/", "sqlite3/")),
)


#: A stack that ends in one of these has no Python frame below the event loop's.
EVENT_LOOP = ("Runner.run (", "run_until_complete (", "asyncio_run (")


def stacks(raw: Path) -> Iterator[tuple[list[str], int]]:
    """Each stack of a py-spy ``raw`` profile (its frames, outermost first) and its
    sample count."""
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if stack and count_text.isdigit():
            yield stack.split(";"), int(count_text)


def breakdown(raw: Path) -> tuple[int, Counter[str]]:
    """The number of samples and the samples of each part in a py-spy raw profile."""
    parts: Counter[str] = Counter()
    total = 0
    for frames, count in stacks(raw):
        total += count
        if frames[-1].startswith(EVENT_LOOP):
            parts["event loop (no Python frame: uvloop's own code)"] += count
            continue
        for part, patterns in PARTS:
            if any(pattern in frame for frame in frames for pattern in patterns):
                parts[part] += count
                break
        else:
            parts["other"] += count
    return total, parts


def render(raw: Path) -> str:
    total, parts = breakdown(raw)
    lines = [f"{raw.name}: {total} samples"]
    lines += [
        f"{100 * count / max(total, 1):6.1f} %  {part}" for part, count in parts.most_common()
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    files = sys.argv[1:] if argv is None else argv
    if not files:
        print(__doc__, file=sys.stderr)
        return 2
    for name in files:
        print(render(Path(name)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
