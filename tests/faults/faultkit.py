"""The fault-injection suite's tools: the stack under test, scenarios and the checker.

A :class:`Scenario` submits tasks through the api (remembering every one that was
accepted with a 2xx), records the faults it injects with their time, and ends with
:meth:`Scenario.check`, the one invariant checker shared by every scenario:

- lost = 0: every accepted task reaches a final status (the one it should);
- no status ever moved backwards, in the store's audit (the applied reports, in
  commit order) and on the live stream (``/api/events``) as a client saw it;
- executions per task <= 1 + the faults that hit it while it was running, where an
  execution is a delivery of one attempt that the worker started (an ``IN_PROGRESS``
  report received before the task was final; attempts after a failure are retries,
  not duplicates);
- no task appears that was never accepted (tasks and audit rows of the scenario);
- the queues ``celery`` and ``direct_tasks`` drain to empty (ready + unacked = 0).

The checker reads the api's SQLite store directly (read only): table ``tasks``, and
``task_events``, where the api records every status report a worker sent.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import socket
import sqlite3
import statistics
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from tasklab_api.store import GAVE_UP, NEVER_DELIVERED
from tasklab_common.models import FINAL_STATUSES, TaskStatus, progress_key
from tasklab_common.queues import CELERY_QUEUE, DIRECT_QUEUE
from tasklab_devtools import waiting
from tasklab_devtools.livestream import TaskEventLog
from tasklab_devtools.procs import ManagedProcess, wait_http_ok
from tasklab_devtools.rabbitmq import RabbitNode
from tasklab_devtools.stack import LocalStack

FINAL = frozenset(s.value for s in FINAL_STATUSES)
TASK_QUEUES = (CELERY_QUEUE, DIRECT_QUEUE)
#: The expected status of an accepted task that may end in any final status.
ANY_FINAL = "*"
#: A fault "hits" a task when it happens between the task's first start and its end,
#: widened by this much on both sides (the two clocks are the same machine's, but a
#: report is stamped a little before it is committed).
HIT_SLACK = timedelta(seconds=1)


def utcnow() -> datetime:
    return datetime.now(UTC)


def wait_until(
    what: str,
    predicate: Callable[[], bool],
    timeout: float,
    interval: float = 0.1,
    detail: Callable[[], object] | None = None,
) -> None:
    """:func:`tasklab_devtools.waiting.wait_until`, with the scenarios' argument order."""
    waiting.wait_until(predicate, what, timeout, interval=interval, detail=detail)


def percentile(values: Iterable[float], pct: float) -> float:
    data = sorted(values)
    if not data:
        return math.nan
    index = min(len(data) - 1, max(0, math.ceil(pct / 100 * len(data)) - 1))
    return data[index]


# ---------------------------------------------------------------- the store's audit


@dataclass(frozen=True)
class TaskRow:
    num: int
    id: str
    method: str
    status: str
    attempts: int
    deliveries: int
    finished_at: datetime | None
    error: str | None = None

    @property
    def ended_by_api(self) -> bool:
        """Final by the api's own decision, not a worker's report: cancelled by a user,
        or failed when an attempt was delivered more often than the delivery limit."""
        return self.status == "CANCELLED" or (
            self.status == "FAILED" and (self.error or "").startswith(GAVE_UP)
        )


@dataclass(frozen=True)
class EventRow:
    rowid: int
    task_id: str
    status: str
    attempt: int
    worker: str | None
    applied: bool
    received_at: datetime


def _when(raw: str | None) -> datetime | None:
    if raw is None:
        return None
    value = datetime.fromisoformat(raw)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


class Audit:
    """Reads the api's SQLite task store (never writes)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @contextlib.contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=30)
        try:
            yield conn
        finally:
            conn.close()

    def max_num(self) -> int:
        with self._db() as db:
            return int(db.execute("SELECT coalesce(max(num), 0) FROM tasks").fetchone()[0])

    def max_event(self) -> int:
        with self._db() as db:
            row = db.execute("SELECT coalesce(max(rowid), 0) FROM task_events").fetchone()
            return int(row[0])

    def tasks(self, after_num: int = 0, ids: Iterable[str] = ()) -> dict[str, TaskRow]:
        """Tasks numbered above ``after_num``, plus the ones in ``ids`` wherever they are."""
        wanted = set(ids)
        with self._db() as db:
            rows = db.execute(
                "SELECT num, id, method, status, attempts, deliveries, finished_at, error "
                "FROM tasks"
            ).fetchall()
        return {
            r[1]: TaskRow(r[0], r[1], r[2], r[3], int(r[4]), int(r[5]), _when(r[6]), r[7])
            for r in rows
            if r[0] > after_num or r[1] in wanted
        }

    def status_counts(self, ids: Iterable[str]) -> dict[str, int]:
        counts: dict[str, int] = defaultdict(int)
        for row in self.tasks(after_num=2**62, ids=ids).values():
            counts[row.status] += 1
        return dict(counts)

    def events(self, after_rowid: int) -> list[EventRow]:
        """Every status report recorded after ``after_rowid``, in commit order."""
        with self._db() as db:
            rows = db.execute(
                "SELECT rowid, task_id, status, attempt, worker, applied, received_at"
                " FROM task_events WHERE rowid > ? ORDER BY rowid",
                (after_rowid,),
            ).fetchall()
        out = []
        for r in rows:
            received = _when(r[6])
            assert received is not None
            out.append(EventRow(r[0], r[1], r[2], int(r[3]), r[4], bool(r[5]), received))
        return out

    def known_ids(self, ids: Iterable[str]) -> set[str]:
        return set(self.tasks(after_num=2**62, ids=ids))


# ---------------------------------------------------------------- the live stream


class LiveRecorder(TaskEventLog):
    """Reads ``/api/events`` in a thread, reconnecting (bounded) when the api goes away.

    A plain HTTP/1.0 socket with a short timeout: the stream is read without chunked
    encoding and the thread can look at its stop flag between reads, without ever
    dropping the connection.
    """

    MAX_CONNECTS = 100

    def __init__(self, base_url: str) -> None:
        super().__init__()
        parts = urlsplit(base_url)
        self.address = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.connects = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="live-recorder", daemon=True)

    def start(self) -> LiveRecorder:
        self._thread.start()
        if not self.hello.wait(15):
            raise AssertionError("no hello on the live stream")
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set() and self.connects < self.MAX_CONNECTS:
            self.connects += 1
            try:
                with socket.create_connection(self.address, timeout=5) as sock:
                    sock.sendall(b"GET /api/events HTTP/1.0\r\nAccept: text/event-stream\r\n\r\n")
                    sock.settimeout(0.5)
                    self._read(sock)
            except OSError:
                pass
            self._stop.wait(0.2)

    def _read(self, sock: socket.socket) -> None:
        head = b""  # the response head, until its end is in
        in_body = False
        self.new_connection()
        while not self._stop.is_set():
            try:
                data = sock.recv(65536)
            except TimeoutError:
                continue
            if not data:
                return
            if not in_body:
                head, sep, data = (head + data).partition(b"\r\n\r\n")
                if not sep:
                    continue
                if b" 200 " not in head.split(b"\r\n", 1)[0]:
                    return
                in_body = True
            self.feed_bytes(data)

    def shown_after(self, num: int) -> set[str]:
        """Ids of the tasks numbered above ``num`` that the stream showed."""
        return {ev["id"] for ev in self.events if int(ev["num"]) > num}

    def by_task(self) -> dict[str, list[tuple[str, int]]]:
        out: dict[str, list[tuple[str, int]]] = defaultdict(list)
        for ev in self.events:
            out[ev["id"]].append((ev["status"], int(ev["attempts"])))
        return out


# ---------------------------------------------------------------- the stack


@dataclass
class FaultStack:
    """The suite's own broker node and local stack, and ways to reach them."""

    node: RabbitNode
    stack: LocalStack
    db_path: Path
    secret: str

    @property
    def base_url(self) -> str:
        return self.stack.cfg.api_base_url

    @property
    def api(self) -> ManagedProcess:
        return self.stack.processes["api"]

    @property
    def celery(self) -> ManagedProcess:
        return self.stack.processes["celery-worker"]

    @property
    def consumer(self) -> ManagedProcess:
        return self.stack.processes["consumer"]

    def audit(self) -> Audit:
        return Audit(self.db_path)

    def client(self, timeout: float = 60) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, timeout=timeout)

    def wait_ready(self, timeout: float = 90) -> None:
        wait_http_ok(f"{self.base_url}/readyz", timeout, process=self.api)

    def ensure_running(self) -> None:
        """Bring back whatever an earlier scenario left stopped; wait until ready."""
        if not self.node.is_running():
            self.node.start()
        for proc in self.stack.processes.values():
            if not proc.running():
                proc.restart()
        self.wait_ready()

    def settle(self, timeout: float = 60) -> dict[str, tuple[int, int]]:
        """Wait until the task queues hold nothing, ready or unacked, at every look for
        2 s (the management API's figures are refreshed every second and can trail
        the broker: one empty look is no proof, nor is one look after it); what was
        left at the last look when ``timeout`` ended first (empty when they settled)."""
        last: dict[str, tuple[int, int]] = {}
        empty_since: float | None = None

        def settled() -> bool:
            nonlocal last, empty_since
            last = {q: c for q, c in self.queue_counts().items() if c != (0, 0)}
            if last:
                empty_since = None
                return False
            now = time.monotonic()
            empty_since = now if empty_since is None else empty_since
            return now - empty_since >= 2.0

        with contextlib.suppress(AssertionError):
            wait_until("the task queues to settle", settled, timeout, interval=0.25)
        return last

    def queue_counts(self) -> dict[str, tuple[int, int]]:
        return {q: self.node.queue_counts(q) for q in TASK_QUEUES}

    def queue_stat(self, queue: str, stat: str) -> int:
        resp = self.node.api("GET", f"api/queues/%2F/{queue}")
        resp.raise_for_status()
        return int(resp.json().get("message_stats", {}).get(stat, 0))

    def published(self) -> int:
        """Messages routed into the task queues so far (the management API's statistics).

        The statistics are refreshed every second: compare with wait-until. (The
        broker's global "received" counter also counts the Celery worker's own
        heartbeat events, so it cannot tell task messages apart.)
        """
        return sum(self.queue_stat(q, "publish") for q in TASK_QUEUES)

    def published_settled(self, quiet: float = 1.5, timeout: float = 30) -> int:
        """:meth:`published` once it has stopped changing for ``quiet`` seconds.

        A baseline taken right after an earlier scenario could otherwise miss that
        scenario's last publishes, which the statistics show up to a second later.
        """
        deadline = time.monotonic() + timeout
        last = self.published()
        while True:
            time.sleep(quiet)
            now = self.published()
            if now == last or time.monotonic() >= deadline:
                return now
            last = now


# ---------------------------------------------------------------- scenarios


@dataclass(frozen=True)
class Fault:
    what: str
    at: datetime


@dataclass
class Row:
    """One line of the printed table."""

    scenario: str
    accepted: int
    final: int
    lost: int
    duplicates: int
    faults: int
    seconds: float
    ok: bool
    note: str = ""


#: The table printed at the end of the session, in the order the scenarios ran.
RESULTS: list[Row] = []


@dataclass
class Verdict:
    row: Row
    tasks: dict[str, TaskRow]
    executions: dict[str, int]


@dataclass
class Scenario:
    """One fault scenario: what it submitted, what it broke, and the check at the end."""

    label: str
    fx: FaultStack
    #: Every accepted task: id -> the final status it must reach (or ANY_FINAL).
    accepted: dict[str, str] = field(default_factory=dict)
    faults: list[Fault] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    responses: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    started: float = field(default_factory=time.monotonic)
    watermark: int = 0
    event_mark: int = 0
    live: LiveRecorder | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _local: threading.local = field(default_factory=threading.local)

    def begin(self) -> Scenario:
        audit = self.fx.audit()
        self.watermark = audit.max_num()
        self.event_mark = audit.max_event()
        self.live = LiveRecorder(self.fx.base_url).start()
        self.started = time.monotonic()
        return self

    def begin_after_setup(self) -> None:
        """Move the scenario's start past what its setup created (not its own tasks)."""
        audit = self.fx.audit()
        self.watermark = audit.max_num()
        self.event_mark = audit.max_event()

    def end(self) -> None:
        if self.live is not None:
            self.live.stop()
        self.reset_http()

    # -------------------------------------------------------------- submitting

    @property
    def http(self) -> httpx.Client:
        client: httpx.Client | None = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = self.fx.client()
        return client

    def reset_http(self) -> None:
        """Drop this thread's client (e.g. after the api restarted)."""
        client: httpx.Client | None = getattr(self._local, "client", None)
        if client is not None:
            client.close()
            self._local.client = None

    def accept(self, resp: httpx.Response, expect: str = "DONE") -> None:
        """Remember the task of a response that accepted it (2xx, or a sync 504)."""
        with self._lock:
            self.responses[resp.status_code] += 1
            if resp.status_code in (200, 202, 504) and resp.request.method == "POST":
                self.accepted[resp.json()["id"]] = expect

    def submit(self, expect: str = "DONE", **body: Any) -> httpx.Response:
        resp = self.http.post("/api/tasks", json=body)
        self.accept(resp, expect)
        return resp

    def submit_ok(self, expect: str = "DONE", **body: Any) -> dict[str, Any]:
        """Submit until accepted, slowing down when the api says so (429), as a polite
        client does; any other refusal fails the test."""
        resp = self.submit(expect, **body)
        deadline = time.monotonic() + 30
        while resp.status_code == 429 and time.monotonic() < deadline:
            time.sleep(min(1.0, float(resp.headers.get("Retry-After", "0.2"))))
            resp = self.submit(expect, **body)
        assert resp.status_code in (200, 202), resp.text
        task: dict[str, Any] = resp.json()
        return task

    def submit_many(
        self, bodies: list[dict[str, Any]], threads: int = 6, expect: str = "DONE"
    ) -> list[dict[str, Any]]:
        """Submit concurrently; every submission must be accepted."""
        with ThreadPoolExecutor(threads, thread_name_prefix="submit") as pool:
            return list(pool.map(lambda body: self.submit_ok(expect, **body), bodies))

    # -------------------------------------------------------------- faults

    def fault(self, what: str) -> None:
        """Record a fault, right before injecting it."""
        self.faults.append(Fault(what, utcnow()))

    def note(self, text: str) -> None:
        self.notes.append(text)

    def counts(self, ids: Iterable[str] | None = None) -> dict[str, int]:
        return self.fx.audit().status_counts(self.accepted if ids is None else ids)

    def wait_counts(
        self, what: str, predicate: Callable[[dict[str, int]], bool], timeout: float = 30
    ) -> None:
        wait_until(what, lambda: predicate(self.counts()), timeout)

    # -------------------------------------------------------------- the checker

    def check(self, timeout: float = 90, max_duplicates: int | None = None) -> Verdict:
        """Wait for the accepted tasks to end, check every invariant, add the table row.

        Fails the test on any violation. ``max_duplicates`` tightens the bound for
        scenarios whose faults must not cause any re-execution at all.
        """
        audit = self.fx.audit()
        ids = list(self.accepted)
        with contextlib.suppress(AssertionError):
            wait_until(
                "every accepted task to be final",
                lambda: (
                    all(t.status in FINAL for t in audit.tasks(after_num=2**62, ids=ids).values())
                    and len(audit.known_ids(ids)) == len(ids)
                ),
                timeout,
                interval=0.2,
            )
        problems: list[str] = []
        tasks = audit.tasks(after_num=self.watermark, ids=ids)
        events = audit.events(self.event_mark)

        lost = [i for i in ids if i not in tasks or tasks[i].status not in FINAL]
        if lost:
            sample = {i: tasks[i].status if i in tasks else "missing" for i in lost[:5]}
            problems.append(f"{len(lost)} accepted task(s) not final: {sample}")
        wrong = {
            i: tasks[i].status
            for i, want in self.accepted.items()
            if i in tasks and tasks[i].status in FINAL and want not in (ANY_FINAL, tasks[i].status)
        }
        per_task: dict[str, list[EventRow]] = defaultdict(list)
        for ev in events:
            per_task[ev.task_id].append(ev)
        if wrong:
            problems.append(f"{len(wrong)} task(s) ended in the wrong status: {_sample(wrong)}")
            for task_id in list(wrong)[:3]:  # why: the error and every report of the task
                history = [(e.status, e.attempt, e.worker, e.applied) for e in per_task[task_id]]
                problems.append(
                    f"task {task_id} ({tasks[task_id].method}, {tasks[task_id].deliveries} "
                    f"deliveries): error {tasks[task_id].error!r}; reports {history}"
                )
        phantoms = sorted(set(tasks) - set(self.accepted))
        if phantoms:
            problems.append(f"{len(phantoms)} task(s) in the store were never accepted")
        known = audit.known_ids({e.task_id for e in events})
        orphan = {e.task_id for e in events if e.task_id not in known}
        if orphan:
            problems.append(f"reports recorded for {len(orphan)} task(s) that do not exist")

        executions: dict[str, int] = {}
        for task_id in ids:
            task = tasks.get(task_id)
            evs = per_task.get(task_id, [])
            problems += order_problems(task_id, evs, task)
            runs, hits = count_executions(evs, task, self.faults)
            executions[task_id] = runs
            if runs > 1 + hits:
                problems.append(
                    f"task {task_id} ran {runs} times with {hits} fault(s) hitting it: "
                    f"{[(e.status, e.attempt, e.worker) for e in evs]}"
                )
            # (Housekeeping fails a task whose message is gone without it starting.)
            gone = task is not None and (task.error or "").startswith(NEVER_DELIVERED)
            if task is not None and task.status in ("DONE", "FAILED") and runs == 0 and not gone:
                problems.append(f"task {task_id} is {task.status} without ever starting")
        duplicates = sum(max(0, n - 1) for n in executions.values())
        if max_duplicates is not None and duplicates > max_duplicates:
            problems.append(f"{duplicates} duplicate execution(s), at most {max_duplicates}")

        if self.live is not None:
            for task_id, seen in self.live.by_task().items():
                keys = [progress_key(TaskStatus(s), a) for s, a in seen]
                if any(b < a for a, b in itertools.pairwise(keys)):
                    problems.append(f"live stream moved task {task_id} backwards: {seen}")
            shown = self.live.shown_after(self.watermark) - set(self.accepted)
            if shown:
                problems.append(f"the live stream showed {len(shown)} task(s) never accepted")

        # Every task is final by now; the broker's own view (its management statistics,
        # refreshed every few seconds) and the workers' last acks can trail that by
        # tens of seconds on a 2-core machine that also runs the cluster tier.
        left = self.fx.settle(60)
        if left:
            problems.append(f"queues not empty: {left}")

        final = sum(1 for i in ids if i in tasks and tasks[i].status in FINAL)
        row = Row(
            scenario=self.label,
            accepted=len(ids),
            final=final,
            lost=len(lost),
            duplicates=duplicates,
            faults=len(self.faults),
            seconds=time.monotonic() - self.started,
            ok=not problems,
            note="; ".join(self.notes),
        )
        RESULTS.append(row)
        assert not problems, "invariants violated:\n- " + "\n- ".join(problems[:20])
        return Verdict(row, tasks, executions)


def _sample(mapping: dict[str, str], n: int = 5) -> dict[str, str]:
    return dict(list(mapping.items())[:n])


def order_problems(task_id: str, evs: list[EventRow], task: TaskRow | None) -> list[str]:
    """Applied reports must move forward strictly, and the last one is the task's status."""
    problems = []
    applied = [e for e in evs if e.applied]
    keys = [progress_key(TaskStatus(e.status), e.attempt) for e in applied]
    if any(b <= a for a, b in itertools.pairwise(keys)):
        problems.append(
            f"task {task_id} moved backwards: {[(e.status, e.attempt) for e in applied]}"
        )
    if task is not None and task.status in FINAL and not task.ended_by_api:
        last = applied[-1].status if applied else None
        if last != task.status:
            problems.append(f"task {task_id} is {task.status} but its last applied report {last}")
    return problems


def count_executions(
    evs: list[EventRow], task: TaskRow | None, faults: list[Fault]
) -> tuple[int, int]:
    """(executions, faults that hit the task while it ran) from its reports.

    An execution is one delivery of one attempt that the worker started: the most
    ``IN_PROGRESS`` reports any single attempt got before the task was final (a
    report after that was answered "do not proceed"). A start the api did not apply
    that its worker followed at once with the start of a later attempt did not run
    either: the attempt was over (handed back), and the worker took the next one. A
    task the api ended itself
    (cancelled, or given up at the delivery limit) has no final report: its end is its
    ``finished_at``, and the start report it was given up on did not run.
    """
    final_at = next((e for e in evs if e.applied and e.status in FINAL), None)
    cancelled_at = task.finished_at if task is not None and task.ended_by_api else None
    superseded = {
        e.rowid
        for e, nxt in itertools.pairwise(evs)
        if e.status == nxt.status == "IN_PROGRESS"
        and not e.applied
        and nxt.attempt > e.attempt
        and nxt.worker == e.worker
    }
    started = [
        e
        for e in evs
        if e.status == "IN_PROGRESS"
        and e.rowid not in superseded
        and (final_at is None or e.rowid < final_at.rowid)
        and (cancelled_at is None or e.received_at < cancelled_at)
    ]
    if not started:
        return 0, 0
    per_attempt: dict[int, int] = defaultdict(int)
    for e in started:
        per_attempt[e.attempt] += 1
    begin = started[0].received_at - HIT_SLACK
    end = (final_at.received_at if final_at else cancelled_at or utcnow()) + HIT_SLACK
    hits = sum(1 for f in faults if begin <= f.at <= end)
    return max(per_attempt.values()), hits


# ---------------------------------------------------------------- the table


def render_table(rows: list[Row]) -> str:
    head = ("scenario", "accepted", "final", "lost", "duplicates", "faults", "time", "result")
    body = [
        (
            r.scenario,
            str(r.accepted),
            str(r.final),
            str(r.lost),
            str(r.duplicates),
            str(r.faults),
            f"{r.seconds:.1f}s",
            "ok" if r.ok else "FAILED",
        )
        for r in rows
    ]
    widths = [max(len(x) for x in col) for col in zip(head, *body, strict=False)]
    numeric = range(1, 7)

    def fmt(cells: tuple[str, ...]) -> str:
        return "  ".join(
            c.rjust(w) if i in numeric else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=False))
        ).rstrip()

    lines = [fmt(head), "  ".join("-" * w for w in widths)]
    lines += [fmt(cells) for cells in body]
    total = sum(r.seconds for r in rows)
    lines.append(f"{len(rows)} scenario(s), {total:.1f}s in scenarios")
    notes = [(r.scenario, r.note) for r in rows if r.note]
    if notes:
        lines.append("")
        lines += [f"{name}: {note}" for name, note in notes]
    return "\n".join(lines)


def latency_summary(values: list[float]) -> str:
    if not values:
        return "no samples"
    ms = [v * 1000 for v in values]
    return (
        f"n={len(ms)} p50={statistics.median(ms):.0f}ms p95={percentile(ms, 95):.0f}ms "
        f"max={max(ms):.0f}ms"
    )
