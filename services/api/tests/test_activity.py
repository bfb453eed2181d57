"""``/api/activity``: the timeline's tasks and the chart's series, from the task store."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fastapi.testclient import TestClient
from sqlalchemy import update

from tasklab_api.activity import read_activity
from tasklab_api.orm import Task
from tasklab_api.store import TaskStore
from tasklab_common.messages import TaskParams
from tasklab_common.models import Method, TaskKind, TaskStatus

S = TaskStatus
#: A clock-aligned start (a multiple of the 5 s buckets of a 300 s window).
T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


async def task(
    store: TaskStore,
    status: TaskStatus,
    created: float,
    started: float | None = None,
    finished: float | None = None,
    worker: str | None = None,
) -> int:
    """A task with the given history (seconds after T0)."""
    made = await store.create(Method.CELERY, TaskKind.PROCESS_TASK, TaskParams(duration=1))
    times = [t for t in (created, started, finished) if t is not None]
    backdated = (
        update(Task)
        .where(Task.id == made.id)
        .values(
            status=status.value,
            worker=worker,
            created_at=at(created),
            started_at=None if started is None else at(started),
            finished_at=None if finished is None else at(finished),
            updated_at=at(max(times)),
        )
    )
    await store._writer.run(lambda s: s.execute(backdated))
    return made.num


async def test_series_and_timeline_from_the_tasks_timestamps(store: TaskStore) -> None:
    # Window: T0-300 s .. T0 (now = T0 - 0.5 s: the last bucket is T0-5 .. T0).
    old_done = await task(store, S.DONE, -900, -899, -898, "w1")  # before the window
    waiting_long = await task(store, S.PENDING, -600)  # waits through the window
    running_long = await task(store, S.IN_PROGRESS, -700, -650, None, "w1")
    await task(store, S.DONE, -400, -290, -12, "w2")  # waited into the window, then ran
    await task(store, S.FAILED, -100, -99, -97, "w1")
    await task(store, S.CANCELLED, -50, None, -40)  # cancelled while waiting
    await task(store, S.DONE, -20, -3, -2, "w2")
    got = await read_activity(
        store, now=at(-0.5), window=timedelta(seconds=300), buckets=60, limit=500
    )
    assert got.start == at(-300) and got.bucket_seconds == 5
    n = len(got.submitted)
    assert n == 60

    def bucket(seconds: float) -> int:  # the bucket holding T0+seconds
        return int((seconds + 300) // 5)

    assert sum(got.submitted) == 3
    assert [i for i, c in enumerate(got.submitted) if c] == [bucket(-100), bucket(-50), bucket(-20)]
    assert sum(got.finished) == 4 and got.finished[bucket(-12)] == 1
    assert got.failed == [1 if i == bucket(-97) else 0 for i in range(n)]

    def level(series: list[int], seconds: float) -> int:  # at the end of that bucket
        return series[bucket(seconds)]

    # Waiting: the long one throughout; the -400 one until -290; -50 until -40; -20 until -3.
    assert level(got.waiting, -296) == 2
    assert level(got.waiting, -286) == 1
    assert level(got.waiting, -46) == 2  # (-50 waiting; -100 started at once)
    assert level(got.waiting, -36) == 1
    assert level(got.waiting, -11) == 2
    assert got.waiting[-1] == 1
    # Running: the long one throughout; -290..-12; -99..-97; -3..-2.
    assert level(got.running, -200) == 2
    assert level(got.running, -99) == 2  # (the bucket ends at -95: -97 ended before)
    assert level(got.running, -3) == 1  # (ends at 0: -3..-2 ended before)
    assert level(got.running, -17) == 2  # (ends at -15: the -290 one ran to -12)
    assert level(got.running, -11) == 1
    assert got.running[-1] == 1
    # Timeline: what the window shows, newest first; the old finished one is left out.
    nums = [t.num for t in got.tasks]
    assert nums == sorted(nums, reverse=True) and len(nums) == got.tasks_total == 6
    assert old_done not in nums and {waiting_long, running_long} <= set(nums)
    limited = await read_activity(
        store, now=at(-0.5), window=timedelta(seconds=300), buckets=60, limit=2
    )
    assert len(limited.tasks) == 2 and limited.tasks_total == 6


def test_the_route_takes_a_bounded_window(client: TestClient) -> None:
    got = client.get("/api/activity")
    assert got.status_code == 200, got.text
    body = got.json()
    assert body["bucket_seconds"] == 5 and body["tasks"] == [] and body["tasks_total"] == 0
    assert set(body["series"]) == {"submitted", "finished", "failed", "waiting", "running"}
    assert all(len(v) == 60 and not any(v) for v in body["series"].values())
    assert client.get("/api/activity", params={"window": 60}).json()["bucket_seconds"] == 1
    for bad in ("59", "3601", "x"):
        assert client.get("/api/activity", params={"window": bad}).status_code == 422
    assert client.get("/api/activity", params={"windw": "60"}).status_code == 422
