"""The invariant checker itself, on made-up audit rows: it must see every violation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from .faultkit import EventRow, Fault, Row, TaskRow, count_executions, order_problems, render_table

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def ev(rowid: int, status: str, attempt: int = 1, applied: bool = True, sec: float = 0) -> EventRow:
    return EventRow(rowid, "t", status, attempt, "w", applied, T0 + timedelta(seconds=sec))


def task(status: str, finished: float | None = None) -> TaskRow:
    at = None if finished is None else T0 + timedelta(seconds=finished)
    return TaskRow(1, "t", "celery", status, 1, 1, at)


def test_a_clean_run_with_a_retry() -> None:
    evs = [
        ev(1, "IN_PROGRESS", 1),
        ev(2, "RETRYING", 1),
        ev(3, "IN_PROGRESS", 2),
        ev(4, "DONE", 2),
        ev(5, "IN_PROGRESS", 1, applied=False),  # a redelivery after the end: skipped
    ]
    assert order_problems("t", evs, task("DONE")) == []
    assert count_executions(evs, task("DONE"), []) == (1, 0)


def test_moving_backwards_is_seen() -> None:
    evs = [ev(1, "IN_PROGRESS", 2), ev(2, "RETRYING", 1), ev(3, "DONE", 2)]
    assert "moved backwards" in order_problems("t", evs, task("DONE"))[0]
    evs = [ev(1, "IN_PROGRESS"), ev(2, "DONE"), ev(3, "FAILED")]
    assert order_problems("t", evs, task("FAILED"))


def test_a_final_status_without_its_report_is_seen() -> None:
    assert "last applied report" in order_problems("t", [ev(1, "IN_PROGRESS")], task("DONE"))[0]
    assert order_problems("t", [ev(1, "IN_PROGRESS")], task("CANCELLED", 5)) == []


def test_executions_count_deliveries_of_one_attempt() -> None:
    evs = [
        ev(1, "IN_PROGRESS", 1, sec=0),
        ev(2, "IN_PROGRESS", 1, applied=False, sec=2),  # redelivered after a crash
        ev(3, "DONE", 1, sec=3),
    ]
    crash = Fault("kill", T0 + timedelta(seconds=1))
    assert count_executions(evs, task("DONE"), [crash]) == (2, 1)
    # A fault long before the task started or after it ended does not count.
    early = Fault("kill", T0 - timedelta(seconds=60))
    late = Fault("kill", T0 + timedelta(seconds=60))
    assert count_executions(evs, task("DONE"), [early, late]) == (2, 0)


def test_a_cancelled_task_ends_at_its_cancel() -> None:
    evs = [ev(1, "IN_PROGRESS", sec=0), ev(2, "IN_PROGRESS", applied=False, sec=9)]
    assert count_executions(evs, task("CANCELLED", finished=5), []) == (1, 0)
    assert count_executions(evs, task("IN_PROGRESS"), []) == (2, 0)


def test_table() -> None:
    rows = [
        Row("1 kill", 240, 240, 0, 2, 1, 10.04, True, "note"),
        Row("2 flood", 5, 4, 1, 0, 0, 1.0, False),
    ]
    table = render_table(rows)
    assert "1 kill" in table and "FAILED" in table and "10.0s" in table
    assert table.splitlines()[0].split() == [
        "scenario",
        "accepted",
        "final",
        "lost",
        "duplicates",
        "faults",
        "time",
        "result",
    ]
