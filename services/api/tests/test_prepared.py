"""Statements run prepared on the driver's cursor store and read values exactly as
SQLAlchemy does, and fail with SQLAlchemy's errors (SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, bindparam, exc, func, insert, select, update
from sqlalchemy.orm import Session

from tasklab_api.db import create_sync_engine, normalize_url
from tasklab_api.orm import Base, Task, TaskEvent
from tasklab_api.store.prepared import Prepared, Statements

TASKS = Base.metadata.tables[Task.__tablename__]
EVENTS = Base.metadata.tables[TaskEvent.__tablename__]
BY_ID = select(*TASKS.c).where(TASKS.c.id == bindparam("task_id"))
WHEN = datetime(2026, 12, 7, 18, 30, 0, 0, tzinfo=UTC)  # whole seconds: no fraction


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = create_sync_engine(normalize_url(db_url), pool_size=1)
    yield engine
    engine.dispose()


def add_task(engine: Engine, task_id: str) -> None:
    with Session(engine) as s, s.begin():
        s.add(
            Task(
                id=task_id,
                method="celery",
                kind="process_task",
                status="PENDING",
                params={"timeout": 1, "nested": {"a": [1, 2]}},
                created_at=WHEN,
                updated_at=WHEN,
            )
        )


def test_a_row_reads_as_through_sqlalchemy(engine: Engine) -> None:
    add_task(engine, "t1")
    with engine.begin() as conn:
        prepared = Prepared(BY_ID, conn.dialect).first(conn, {"task_id": "t1"})
        expected = tuple(conn.execute(BY_ID, {"task_id": "t1"}).one())
        missing = Prepared(BY_ID, conn.dialect).first(conn, {"task_id": "none"})
    assert prepared == expected
    assert prepared is not None and prepared[-1] == WHEN and prepared[-1].tzinfo is not None
    assert missing is None


def test_a_row_written_reads_back_through_the_orm(engine: Engine) -> None:
    add_task(engine, "t1")
    later = WHEN + timedelta(seconds=3, microseconds=250)
    write = (
        update(TASKS)
        .where(TASKS.c.id == bindparam("task_id"))
        .values(
            status=bindparam("status"),
            result=bindparam("result"),
            finished_at=bindparam("finished_at"),
            attempts=bindparam("attempts"),
        )
    )
    with engine.begin() as conn:
        Prepared(write, conn.dialect).run(
            conn,
            {
                "task_id": "t1",
                "status": "DONE",
                "result": {"sum": 3, "text": "ü"},
                "finished_at": later,
                "attempts": 2,
            },
        )
    with Session(engine) as s:
        task = s.scalars(select(Task).where(Task.id == "t1")).one()
        assert (task.status, task.result, task.finished_at, task.attempts) == (
            "DONE",
            {"sum": 3, "text": "ü"},
            later,
            2,
        )
    with engine.begin() as conn:
        Prepared(write, conn.dialect).run(
            conn,
            {"task_id": "t1", "status": "DONE", "result": None, "finished_at": None, "attempts": 2},
        )
    with Session(engine) as s:
        task = s.scalars(select(Task).where(Task.id == "t1")).one()
        assert (task.result, task.finished_at) == (None, None)


def test_a_literal_of_the_statement_is_bound_with_the_values(engine: Engine) -> None:
    add_task(engine, "t1")
    starts = (
        select(func.count())
        .select_from(EVENTS)
        .where(EVENTS.c.task_id == bindparam("task_id"), EVENTS.c.status == "IN_PROGRESS")
    )
    event = {"task_id": "t1", "attempt": 1, "worker": "w", "applied": True}
    with engine.begin() as conn:
        record = Prepared(insert(EVENTS), conn.dialect)
        for n, status in enumerate(["IN_PROGRESS", "IN_PROGRESS", "DONE"]):
            times = {"reported_at": WHEN, "received_at": WHEN}
            record.run(conn, {**event, **times, "event_id": f"e{n}", "status": status})
        assert Prepared(starts, conn.dialect).first(conn, {"task_id": "t1"}) == (2,)


def test_a_driver_error_is_sqlalchemys_and_the_transaction_rolls_back(engine: Engine) -> None:
    add_task(engine, "t1")
    event = {
        "event_id": "e1",
        "task_id": "t1",
        "status": "DONE",
        "attempt": 1,
        "worker": None,
        "applied": True,
        "reported_at": WHEN,
        "received_at": WHEN,
    }
    with engine.begin() as conn:
        Prepared(insert(EVENTS), conn.dialect).run(conn, event)
    with engine.begin() as conn:
        record = Prepared(insert(EVENTS), conn.dialect)
        record.run(conn, {**event, "event_id": "e2"})
        with pytest.raises(exc.IntegrityError):
            record.run(conn, event)  # the same key again
        conn.rollback()
    with engine.connect() as conn:
        ids = conn.execute(select(EVENTS.c.event_id).order_by(EVENTS.c.event_id)).scalars()
        assert list(ids) == ["e1"]  # e2 went with its transaction


def test_statements_are_prepared_once_per_dialect(engine: Engine) -> None:
    made: list[str] = []

    def by_dialect(dialect: object) -> object:
        made.append(type(dialect).__name__)
        return BY_ID

    statements = Statements(by_id=by_dialect)  # type: ignore[arg-type]
    with engine.connect() as conn:
        first = statements.on(conn)["by_id"]
        assert statements.on(conn)["by_id"] is first
    assert len(made) == 1
