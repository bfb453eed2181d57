"""The task store on real SQLite and PostgreSQL: monotonic, idempotent statuses."""

from __future__ import annotations

import asyncio
import secrets
import threading
from collections.abc import Awaitable
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from sqlalchemy import case, event, select, text, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from tasklab_api.db import libpq_conninfo, normalize_url
from tasklab_api.events import NOTIFY_CHANNEL, NOTIFY_SEPARATOR, EventHub
from tasklab_api.orm import Task, TaskEvent
from tasklab_api.store import (
    GAVE_UP,
    NEVER_DELIVERED,
    RETRY_GONE,
    NotCancellable,
    ReplayError,
    TaskNotFound,
    TaskStore,
)
from tasklab_api.store.notify import IDS_PER_NOTIFY, notify_sync
from tasklab_common import queues
from tasklab_common.messages import StatusUpdate, TaskParams, utcnow
from tasklab_common.models import Method, TaskKind, TaskStatus, Verdict

S = TaskStatus


def nonce() -> str:
    return secrets.token_hex(16)


async def new_task(store: TaskStore) -> str:
    task = await store.create(Method.CELERY, TaskKind.PROCESS_TASK, TaskParams(duration=1))
    return task.id


async def report(store: TaskStore, task_id: str, status: S, attempt: int = 1, **kw: object):  # type: ignore[no-untyped-def]
    return await store.apply_update(
        StatusUpdate.model_validate(
            {"task_id": task_id, "status": status, "attempt": attempt, **kw}
        ),
        nonce(),
    )


async def in_one_group(store: TaskStore, *writes: Awaitable[Any]) -> list[Any]:
    """The outcomes of ``writes`` (results or exceptions), run as one group: the writer is
    kept busy until they all wait for it."""
    release = threading.Event()
    blocker = asyncio.ensure_future(store._writer.run(lambda s: release.wait(5)))
    await asyncio.sleep(0.05)  # the writer is busy: the writes below form one group
    results = asyncio.gather(*writes, return_exceptions=True)
    await asyncio.sleep(0.05)
    release.set()
    await blocker
    return await results


async def test_numbers_follow_submission_order(store: TaskStore) -> None:
    nums = [
        (await store.create(Method.SYNC, TaskKind.PROCESS_TASK, TaskParams())).num for _ in range(3)
    ]
    assert nums == sorted(nums) and len(set(nums)) == 3
    assert nums[0] >= 1


async def test_happy_path_with_retry(store: TaskStore) -> None:
    tid = await new_task(store)
    out = await report(store, tid, S.IN_PROGRESS, 1, worker="w1")
    assert out.applied and out.proceed and out.task.started_at is not None
    out = await report(store, tid, S.RETRYING, 1, error="boom")
    assert out.applied and out.task.status == "RETRYING" and out.task.error == "boom"
    out = await report(store, tid, S.IN_PROGRESS, 2, worker="w2")
    assert out.applied and out.task.attempts == 2 and out.task.worker == "w2"
    out = await report(store, tid, S.DONE, 2, result={"status": "success"})
    assert out.applied and not out.proceed
    assert out.task.status == "DONE" and out.task.result == {"status": "success"}
    assert out.task.error is None and out.task.finished_at is not None


@pytest.mark.parametrize(
    ("late", "attempt"),
    [(S.IN_PROGRESS, 1), (S.RETRYING, 1), (S.IN_PROGRESS, 2), (S.FAILED, 3), (S.DONE, 1)],
)
async def test_nothing_moves_a_final_status(store: TaskStore, late: S, attempt: int) -> None:
    tid = await new_task(store)
    await report(store, tid, S.IN_PROGRESS, 1)
    await report(store, tid, S.DONE, 1, result={"x": 1})
    out = await report(store, tid, late, attempt, error="late")
    assert not out.applied and not out.proceed
    task = await store.get(tid)
    assert task is not None and task.status == "DONE" and task.result == {"x": 1}
    assert task.error is None


async def test_out_of_order_reports_are_ignored(store: TaskStore) -> None:
    tid = await new_task(store)
    assert (await report(store, tid, S.IN_PROGRESS, 2)).applied
    out = await report(store, tid, S.RETRYING, 1)
    assert not out.applied and out.proceed
    out = await report(store, tid, S.IN_PROGRESS, 1)
    assert not out.applied
    task = await store.get(tid)
    assert task is not None and task.status == "IN_PROGRESS" and task.attempts == 2


async def test_same_event_twice_is_a_duplicate(store: TaskStore) -> None:
    tid = await new_task(store)
    upd = StatusUpdate(task_id=tid, status=S.IN_PROGRESS, worker="w")
    first = await store.apply_update(upd, nonce())
    second = await store.apply_update(upd, nonce())
    assert first.applied and not first.duplicate
    assert second.duplicate and not second.applied
    task = await store.get(tid)
    assert task is not None and task.deliveries == 1


async def test_redelivery_records_the_new_worker(store: TaskStore) -> None:
    tid = await new_task(store)
    await report(store, tid, S.IN_PROGRESS, 1, worker="w1")
    out = await report(store, tid, S.IN_PROGRESS, 1, worker="w2")
    assert not out.applied and out.proceed
    task = await store.get(tid)
    assert task is not None and task.worker == "w2" and task.deliveries == 2


async def test_a_report_that_changes_nothing_writes_nothing(store: TaskStore) -> None:
    """A late or stale report (e.g. a compromised worker's) on a finished task: no field
    of the task changes, and the outcome says there is nothing to announce."""
    tid = await new_task(store)
    assert (await report(store, tid, S.IN_PROGRESS, 1, worker="w1")).changed
    assert (await report(store, tid, S.DONE, 1, worker="w1", result={"ok": 1})).changed
    before = await store.get(tid)
    assert before is not None
    for status, attempt in ((S.IN_PROGRESS, 1), (S.IN_PROGRESS, 5), (S.FAILED, 1), (S.DONE, 1)):
        out = await report(store, tid, status, attempt, worker="intruder", result={"x": 2})
        assert not out.applied and not out.changed and not out.proceed
    after = await store.get(tid)
    assert after is not None
    fields = ("status", "attempts", "worker", "result", "error", "deliveries", "updated_at")
    assert [getattr(after, f) for f in fields] == [getattr(before, f) for f in fields]


async def test_replayed_nonce_is_refused(store: TaskStore) -> None:
    tid = await new_task(store)
    n = nonce()
    await store.apply_update(StatusUpdate(task_id=tid, status=S.IN_PROGRESS), n)
    with pytest.raises(ReplayError):
        await store.apply_update(StatusUpdate(task_id=tid, status=S.DONE), n)
    task = await store.get(tid)
    assert task is not None and task.status == "IN_PROGRESS"


async def test_unknown_task(store: TaskStore) -> None:
    with pytest.raises(TaskNotFound):
        await report(store, "no-such-task", S.DONE)
    with pytest.raises(TaskNotFound):
        await store.cancel("no-such-task")


async def test_cancel(store: TaskStore) -> None:
    tid = await new_task(store)
    out = await store.cancel(tid)
    assert out.previous is S.PENDING and out.task.status == "CANCELLED"
    claim = await report(store, tid, S.IN_PROGRESS, 1)
    assert not claim.applied and not claim.proceed
    with pytest.raises(NotCancellable):
        await store.cancel(tid)


async def test_concurrent_reports_end_final(store: TaskStore) -> None:
    """Reports racing each other: the task ends DONE whatever order they land in."""
    tids = [await new_task(store) for _ in range(5)]
    updates = [
        (tid, st, att)
        for tid in tids
        for st, att in [(S.IN_PROGRESS, 1), (S.RETRYING, 1), (S.IN_PROGRESS, 2), (S.DONE, 2)]
    ]
    await asyncio.gather(*(report(store, t, st, att) for t, st, att in reversed(updates)))
    for tid in tids:
        task = await store.get(tid)
        assert task is not None and task.status == "DONE" and task.attempts == 2


async def test_list_filters_and_order(store: TaskStore) -> None:
    a = await store.create(Method.CELERY, TaskKind.PROCESS_TASK, TaskParams())
    b = await store.create(Method.RABBITMQ, TaskKind.PROCESS_DATA, TaskParams(numbers=[1.0]))
    await report(store, a.id, S.IN_PROGRESS)
    rows, total = await store.list_tasks(limit=10)
    assert [r.id for r in rows] == [b.id, a.id] and total == 2
    rows, total = await store.list_tasks(limit=10, method=[Method.RABBITMQ])
    assert [r.id for r in rows] == [b.id] and total == 1
    rows, _ = await store.list_tasks(limit=10, status=[S.IN_PROGRESS])
    assert [r.id for r in rows] == [a.id]


async def test_delivery_limit_gives_up_and_dead_letters(store: TaskStore) -> None:
    """An attempt started `delivery_limit` times without an outcome: the next start
    marks the task FAILED and asks for the message to be dead-lettered."""
    store.delivery_limit = 3
    tid = await new_task(store)
    for n in range(3):
        claim = await report(store, tid, S.IN_PROGRESS, 1, worker=f"w{n}")
        assert claim.proceed and not claim.gave_up
    last = await report(store, tid, S.IN_PROGRESS, 1, worker="w3")
    assert last.gave_up and not last.proceed and not last.applied
    task = await store.get(tid)
    assert task is not None and task.status == "FAILED" and task.deliveries == 4
    assert task.error is not None and "delivered 4 times" in task.error
    assert task.finished_at is not None
    # A late DONE from a worker that was not dead after all changes nothing.
    late = await report(store, tid, S.DONE, 1)
    assert not late.applied and not late.gave_up
    # Another redelivery of the same message: not run, not counted again.
    again = await report(store, tid, S.IN_PROGRESS, 1)
    assert not again.proceed and not again.gave_up


async def test_delivery_limit_counts_per_attempt(store: TaskStore) -> None:
    """Retries are new attempts: each has its own count of starts."""
    store.delivery_limit = 2
    tid = await new_task(store)
    for attempt in (1, 2, 3):
        assert (await report(store, tid, S.IN_PROGRESS, attempt)).proceed
        assert (await report(store, tid, S.IN_PROGRESS, attempt)).proceed
        await report(store, tid, S.RETRYING, attempt)
    done = await report(store, tid, S.DONE, 3)
    assert done.applied
    task = await store.get(tid)
    assert task is not None and task.status == "DONE"


async def test_a_repeated_report_is_not_another_delivery(store: TaskStore) -> None:
    """The same IN_PROGRESS report sent again (lost answer) is a duplicate, not a start."""
    store.delivery_limit = 1
    tid = await new_task(store)
    update = StatusUpdate(task_id=tid, status=S.IN_PROGRESS, attempt=1)
    assert (await store.apply_update(update, nonce())).proceed
    again = await store.apply_update(update, nonce())
    assert again.duplicate and again.proceed
    assert (await report(store, tid, S.DONE, 1)).applied


async def _age(store: TaskStore, task_id: str, *, created: bool = False, **ago: float) -> None:
    """Move a task's last change (and finish, when final; and with ``created`` its
    creation) back in time."""
    when = utcnow() - timedelta(**ago)
    since = {"created_at": when} if created else {}
    aged = (
        update(Task)
        .where(Task.id == task_id)
        .values(
            updated_at=when,
            finished_at=case((Task.finished_at.is_(None), None), else_=when),
            **since,
        )
    )
    await store._writer.run(lambda s: s.execute(aged))


async def _assert_statuses(store: TaskStore, expected: dict[str, str]) -> None:
    """Each task is (still) in the given status."""
    for task_id, status in expected.items():
        task = await store.get(task_id)
        assert task is not None and task.status == status, (task_id, task)


async def test_fail_stuck_only_past_duration_and_grace(store: TaskStore) -> None:
    grace = timedelta(seconds=60)
    silent = await new_task(store)  # duration 1 s
    await report(store, silent, S.IN_PROGRESS, 1)
    await _age(store, silent, seconds=62)
    long_task = (
        await store.create(Method.RABBITMQ, TaskKind.PROCESS_TASK, TaskParams(duration=600))
    ).id
    await report(store, long_task, S.IN_PROGRESS, 1)
    await _age(store, long_task, seconds=62)  # still within its 600 s of work
    retrying = (
        await store.create(Method.RABBITMQ, TaskKind.PROCESS_TASK, TaskParams(duration=1))
    ).id  # the consumer retries in place: silence means it is gone
    await report(store, retrying, S.IN_PROGRESS, 1)
    await report(store, retrying, S.RETRYING, 1)
    await _age(store, retrying, seconds=3600)
    celery_retry = await new_task(store)  # its retry message waits in the queue
    await report(store, celery_retry, S.IN_PROGRESS, 1)
    await report(store, celery_retry, S.RETRYING, 1)
    await _age(store, celery_retry, seconds=3600)
    queued = await new_task(store)  # PENDING: its message waits in the queue
    await _age(store, queued, days=3)
    recent = await new_task(store)
    await report(store, recent, S.IN_PROGRESS, 1)

    failed = {t.id for t in await store.housekeeping.fail_stuck(grace)}
    assert failed == {silent, retrying}
    for tid in failed:
        task = await store.get(tid)
        assert task is not None and task.status == "FAILED" and task.finished_at is not None
        assert task.error is not None and task.error.startswith(GAVE_UP), task.error
    await _assert_statuses(
        store,
        {
            long_task: "IN_PROGRESS",
            queued: "PENDING",
            recent: "IN_PROGRESS",
            celery_retry: "RETRYING",
        },
    )
    # A late report from the vanished worker changes nothing; a second run finds nothing.
    assert not (await report(store, silent, S.DONE, 1)).applied
    assert await store.housekeeping.fail_stuck(grace) == []


async def test_fail_orphaned_only_pending_never_delivered_in_empty_queues(
    store: TaskStore,
) -> None:
    grace = timedelta(seconds=60)

    async def created(method: Method, seconds: float) -> str:
        task = await store.create(method, TaskKind.PROCESS_TASK, TaskParams(duration=1))
        await _age(store, task.id, created=True, seconds=seconds)
        return task.id

    orphan = await created(Method.CELERY, 300)
    sync_orphan = await created(Method.SYNC, 300)
    recent = await created(Method.CELERY, 10)  # its confirm may be a moment ago
    before_empty = await created(Method.CELERY, 100)  # queued after the first empty look
    direct = await created(Method.RABBITMQ, 300)  # its queue is not empty
    started = await created(Method.CELERY, 300)
    await report(store, started, S.IN_PROGRESS, 1)
    retry_gone = await created(Method.CELERY, 300)
    await report(store, retry_gone, S.IN_PROGRESS, 1)
    await report(store, retry_gone, S.RETRYING, 1)
    await _age(store, retry_gone, seconds=300)
    consumer_retry = await created(Method.RABBITMQ, 300)  # retries in place: not here
    await report(store, consumer_retry, S.IN_PROGRESS, 1)
    await report(store, consumer_retry, S.RETRYING, 1)
    await _age(store, consumer_retry, seconds=300)

    empty_since = {queues.CELERY_QUEUE: utcnow() - timedelta(seconds=200)}
    assert await store.housekeeping.fail_orphaned({}, grace) == []
    failed = await store.housekeeping.fail_orphaned(empty_since, grace)
    assert {t.id for t in failed} == {orphan, sync_orphan, retry_gone}
    for task in failed:
        assert task.status == "FAILED" and task.finished_at is not None
        prefix = RETRY_GONE if task.id == retry_gone else NEVER_DELIVERED
        assert task.error is not None and task.error.startswith(prefix), task.error
    await _assert_statuses(
        store,
        {
            recent: "PENDING",
            before_empty: "PENDING",
            direct: "PENDING",
            started: "IN_PROGRESS",
            consumer_retry: "RETRYING",
        },
    )
    assert await store.housekeeping.fail_orphaned(empty_since, grace) == []


async def test_purge_history_deletes_old_final_tasks_and_their_reports(store: TaskStore) -> None:
    old_done = await new_task(store)
    await report(store, old_done, S.IN_PROGRESS, 1)
    await report(store, old_done, S.DONE, 1)
    await _age(store, old_done, days=40)
    old_running = await new_task(store)
    await report(store, old_running, S.IN_PROGRESS, 1)
    await _age(store, old_running, days=40)  # not final: never purged
    fresh_done = await new_task(store)
    await report(store, fresh_done, S.IN_PROGRESS, 1)
    await report(store, fresh_done, S.DONE, 1)

    assert await store.housekeeping.purge_history(timedelta(days=30)) == (1, 2)
    assert await store.get(old_done) is None
    assert await store.get(old_running) is not None and await store.get(fresh_done) is not None
    async with store._reads() as s:
        left = (await s.execute(select(TaskEvent.task_id))).scalars().all()
    assert old_done not in left and fresh_done in left
    assert await store.housekeeping.purge_history(timedelta(days=30)) == (0, 0)


async def test_postgres_sessions_are_time_limited(store: TaskStore, db_url: str) -> None:
    """No statement, lock wait or idle transaction holds a PostgreSQL connection for long."""
    if db_url.startswith("sqlite"):
        pytest.skip("PostgreSQL session limits")
    async with store._reads() as s:
        shown = {
            name: (await s.execute(text(f"SHOW {name}"))).scalar_one()
            for name in ("statement_timeout", "lock_timeout", "idle_in_transaction_session_timeout")
        }
    assert shown == {
        "statement_timeout": "15s",
        "lock_timeout": "10s",
        "idle_in_transaction_session_timeout": "1min",
    }


async def test_discard_keeps_a_task_a_worker_already_started(store: TaskStore) -> None:
    """A publish whose confirm timed out may have been delivered: a started task stays."""
    unpublished = await new_task(store)
    assert await store.discard(unpublished)
    assert await store.get(unpublished) is None
    delivered = await new_task(store)
    await report(store, delivered, S.IN_PROGRESS, 1)
    assert not await store.discard(delivered)
    task = await store.get(delivered)
    assert task is not None and task.status == "IN_PROGRESS"


async def test_concurrent_submissions_are_inserted_together_and_numbered(
    store: TaskStore,
) -> None:
    """Submissions arriving together share transactions; each gets its own row and num."""
    tasks = await asyncio.gather(
        *(
            store.create(Method.CELERY, TaskKind.PROCESS_TASK, TaskParams(duration=i))
            for i in range(60)
        )
    )
    nums = [t.num for t in tasks]
    assert len(set(nums)) == 60 and all(n >= 1 for n in nums)
    for task in tasks:
        stored = await store.get(task.id)
        assert stored is not None and stored.num == task.num
        assert stored.params == task.params


async def test_reports_arriving_together_share_a_commit_each_with_its_own_outcome(
    store: TaskStore, db_url: str
) -> None:
    """SQLite groups concurrent writes into one transaction: a replayed nonce fails only
    its own report, and two reports on the same task in one group keep their own
    outcomes. (PostgreSQL's writer threads run them side by side, in no set order.)"""
    tids = [await new_task(store) for _ in range(30)]
    replayed = nonce()
    await store.apply_update(StatusUpdate(task_id=tids[0], status=S.IN_PROGRESS), replayed)
    commits = 0

    def on_commit(_conn: object) -> None:
        nonlocal commits
        commits += 1

    engine = store._writer._engine
    event.listen(engine, "commit", on_commit)
    try:
        results = await asyncio.gather(
            store.apply_update(StatusUpdate(task_id=tids[0], status=S.DONE), replayed),
            *(report(store, tid, S.IN_PROGRESS, worker=f"w{i}") for i, tid in enumerate(tids)),
            report(store, tids[1], S.DONE, result={"n": 1}),
            report(store, "no-such-task", S.DONE),
            return_exceptions=True,
        )
    finally:
        event.remove(engine, "commit", on_commit)
    assert isinstance(results[0], ReplayError)
    assert isinstance(results[-1], TaskNotFound)
    claims = results[1:-2]
    assert all(not isinstance(r, BaseException) for r in claims)
    first = claims[0]  # tids[0]: already IN_PROGRESS by the earlier report
    assert not isinstance(first, BaseException) and not first.applied and first.proceed
    for i, claim in enumerate(claims[1:], start=1):
        assert not isinstance(claim, BaseException)
        if i == 1 and not claim.applied and db_url.startswith("postgresql"):
            # Another writer thread applied this task's DONE first: its IN_PROGRESS is
            # then stale, and says so.
            assert claim.task.status == "DONE" and not claim.proceed
            continue
        assert claim.applied and claim.task.status == "IN_PROGRESS" and claim.proceed
        assert claim.task.worker == f"w{i}"
    done = results[-2]
    assert not isinstance(done, BaseException)
    assert done.applied and done.task.status == "DONE" and not done.proceed
    assert (await store.get(tids[1])).status == "DONE"  # type: ignore[union-attr]
    assert (await store.get(tids[0])).status == "IN_PROGRESS"  # type: ignore[union-attr]
    for tid in tids[2:]:
        assert (await store.get(tid)).status == "IN_PROGRESS"  # type: ignore[union-attr]
    if "sqlite" in db_url:
        assert commits < len(results) / 2, f"{commits} commits for {len(results)} reports"


async def test_an_open_read_neither_blocks_nor_waits_for_the_writer(
    store: TaskStore, db_url: str
) -> None:
    """Reads run in read-only sessions (SQLite: a deferred BEGIN, WAL), so the writer
    commits while a read transaction is open; on SQLite the read keeps its snapshot."""
    tid = await new_task(store)
    async with store._reads() as s, s.begin():
        before = (await s.execute(select(Task.status).where(Task.id == tid))).scalar_one()
        out = await asyncio.wait_for(report(store, tid, S.IN_PROGRESS), timeout=5)
        assert out.applied
        still = (await s.execute(select(Task.status).where(Task.id == tid))).scalar_one()
    assert before == "PENDING"
    assert still == ("PENDING" if "sqlite" in db_url else "IN_PROGRESS")
    assert (await store.get(tid)).status == "IN_PROGRESS"  # type: ignore[union-attr]


async def test_a_group_whose_transaction_is_lost_fails_every_write(
    store: TaskStore, db_url: str
) -> None:
    """SQLite ends the whole transaction on some errors (here: disk full); the writes of
    the group before the failing one are gone too, so every caller gets the error and
    nothing runs outside the transaction."""
    if "sqlite" not in db_url:
        pytest.skip("groups of writes exist on SQLite only")
    a, b = await new_task(store), await new_task(store)

    def fill(s: Session) -> None:
        pages = s.execute(text("PRAGMA page_count")).scalar_one()
        s.execute(text(f"PRAGMA max_page_count = {pages + 2}"))
        try:
            s.execute(
                text("INSERT INTO callback_nonces(nonce, seen_at) VALUES (:n, '2020-01-01')"),
                {"n": "x" * 200_000},
            )
        finally:
            s.execute(text("PRAGMA max_page_count = 1073741823"))

    outcomes = await in_one_group(
        store,
        report(store, a, S.IN_PROGRESS),
        store._writer.run(fill),
        report(store, b, S.IN_PROGRESS),
    )
    assert all(isinstance(r, OperationalError) for r in outcomes), outcomes
    assert "full" in str(outcomes[0])
    for tid in (a, b):
        assert (await store.get(tid)).status == "PENDING"  # type: ignore[union-attr]
    assert (await report(store, a, S.IN_PROGRESS)).applied  # the store works on


async def test_a_work_failing_in_a_group_fails_alone(store: TaskStore, db_url: str) -> None:
    """A write of a group that fails otherwise than by a refusal (which writes nothing)
    may have written part of its work: the group is rolled back and its writes run
    again one transaction each, so that only the failing one fails."""
    if "sqlite" not in db_url:
        pytest.skip("groups of writes exist on SQLite only")
    a, b = await new_task(store), await new_task(store)
    runs = 0

    def half_done(s: Session) -> None:
        nonlocal runs
        runs += 1
        s.execute(update(Task).where(Task.id == a).values(error="half-done"))
        raise RuntimeError("failed midway")

    first, failed, last = await in_one_group(
        store,
        report(store, a, S.IN_PROGRESS),
        store._writer.run(half_done),
        report(store, b, S.IN_PROGRESS),
    )
    assert isinstance(failed, RuntimeError)
    assert runs == 2  # in the group, then alone
    for outcome in (first, last):
        assert not isinstance(outcome, BaseException) and outcome.applied
    task = await store.get(a)
    assert task is not None and task.status == "IN_PROGRESS" and task.error is None
    assert (await store.get(b)).status == "IN_PROGRESS"  # type: ignore[union-attr]


async def test_the_reports_of_one_request_share_its_nonce(store: TaskStore) -> None:
    """Several reports under one nonce: applied in order in one transaction (None for a
    task the store does not know); the nonce again refuses them all, nothing applied."""
    a, b = await new_task(store), await new_task(store)
    signed = nonce()

    def update(task_id: str, status: S) -> StatusUpdate:
        return StatusUpdate(task_id=task_id, status=status, attempt=1)

    results = await store.apply_updates(
        [update(a, S.IN_PROGRESS), update("no-such-task", S.DONE), update(b, S.IN_PROGRESS)],
        signed,
    )
    assert [r.verdict if r else None for r in results] == [Verdict.APPLIED, None, Verdict.APPLIED]
    with pytest.raises(ReplayError):
        await store.apply_updates([update(a, S.DONE), update(b, S.DONE)], signed)
    assert [t.status for t in await store.get_many([a, b])] == ["IN_PROGRESS"] * 2


async def test_a_transaction_notifies_every_task_it_changed_at_once(
    store: TaskStore, db_url: str
) -> None:
    """PostgreSQL: the tasks one transaction changed go out in one NOTIFY (split only
    where the payload limit needs it), and the listener publishes each of them."""
    if "sqlite" in db_url:
        pytest.skip("NOTIFY is PostgreSQL's")
    conninfo = libpq_conninfo(normalize_url(db_url))
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as listen:
        await listen.execute(f"LISTEN {NOTIFY_CHANNEL}")
        a, b = await new_task(store), await new_task(store)
        await store.apply_updates(
            [
                StatusUpdate(task_id=a, status=S.IN_PROGRESS, attempt=1),
                StatusUpdate(task_id=b, status=S.IN_PROGRESS, attempt=1),
            ],
            nonce(),
        )
        notes = [n.payload async for n in listen.notifies(timeout=5, stop_after=1)]
        assert notes == [f"{a}{NOTIFY_SEPARATOR}{b}"]

        many = [secrets.token_hex(18) for _ in range(IDS_PER_NOTIFY + 1)]
        await store._writer.run(lambda s: notify_sync(s.connection(), many))
        notes = [n.payload async for n in listen.notifies(timeout=5, stop_after=2)]
        assert [len(n.split(NOTIFY_SEPARATOR)) for n in notes] == [IDS_PER_NOTIFY, 1]

    hub = EventHub()
    hub.start_listener(conninfo, store.get_many)
    try:
        await asyncio.wait_for(hub.listening.wait(), 10)
        async with hub.subscribe() as q:
            await store.apply_updates(
                [
                    StatusUpdate(task_id=a, status=S.DONE, attempt=1),
                    StatusUpdate(task_id=b, status=S.DONE, attempt=1),
                ],
                nonce(),
            )
            seen = [await asyncio.wait_for(q.get(), 10) for _ in range(2)]
        assert {(t.id, t.status) for t in seen if t is not None} == {(a, S.DONE), (b, S.DONE)}
    finally:
        await hub.close()
