from __future__ import annotations

import itertools

import pytest

from tasklab_common.models import FINAL_STATUSES, TaskStatus, progress_key, supersedes

S = TaskStatus


def test_final_statuses() -> None:
    assert {s for s in S if s.is_final} == {S.DONE, S.FAILED, S.CANCELLED} == FINAL_STATUSES


@pytest.mark.parametrize(
    ("new", "na", "cur", "ca", "expected"),
    [
        (S.IN_PROGRESS, 1, S.PENDING, 0, True),
        (S.RETRYING, 1, S.IN_PROGRESS, 1, True),
        (S.IN_PROGRESS, 2, S.RETRYING, 1, True),
        (S.DONE, 1, S.PENDING, 0, True),
        (S.FAILED, 4, S.RETRYING, 3, True),
        (S.IN_PROGRESS, 1, S.IN_PROGRESS, 1, False),
        (S.IN_PROGRESS, 1, S.RETRYING, 1, False),
        (S.RETRYING, 1, S.IN_PROGRESS, 2, False),
        (S.DONE, 1, S.CANCELLED, 0, False),
        (S.FAILED, 9, S.DONE, 1, False),
    ],
)
def test_supersedes(new: S, na: int, cur: S, ca: int, expected: bool) -> None:
    assert supersedes(new, na, cur, ca) is expected


def test_order_is_total_and_final_is_top() -> None:
    keys = [progress_key(s, a) for s, a in itertools.product(S, range(4))]
    top = progress_key(S.DONE, 0)
    assert all(k <= top for k in keys)
    assert progress_key(S.RETRYING, 1) < progress_key(S.IN_PROGRESS, 2)
