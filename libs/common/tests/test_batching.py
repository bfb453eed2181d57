"""Concurrent calls combined into batches, with real threads."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import pytest

from tasklab_common.batching import Combiner


class Sender:
    """Records each batch; the first one waits until released (a slow request)."""

    def __init__(self, fail_on: str | None = None) -> None:
        self.batches: list[list[str]] = []
        self.first_started = threading.Event()
        self.release = threading.Event()
        self.fail_on = fail_on

    def __call__(self, items: Sequence[str]) -> list[str]:
        self.batches.append(list(items))
        if len(self.batches) == 1:
            self.first_started.set()
            assert self.release.wait(10)
        if self.fail_on in items:
            raise ValueError(f"refused {self.fail_on}")
        return [item.upper() for item in items]


def _waiting(combiner: Combiner[str, str], count: int) -> None:
    """Until ``count`` calls wait behind the batch on its way."""
    deadline = threading.Event()
    for _ in range(500):
        with combiner._lock:
            if len(combiner._waiting) >= count:
                return
        deadline.wait(0.01)
    raise AssertionError(f"{count} calls never waited")


def test_a_call_alone_goes_alone_and_at_once() -> None:
    sender = Sender()
    sender.release.set()
    combiner = Combiner(sender, max_items=10, max_size=100)
    assert combiner.call("a") == "A"
    assert combiner.call("b") == "B"
    assert sender.batches == [["a"], ["b"]]


def test_calls_made_while_a_batch_is_on_its_way_go_together_each_with_its_result() -> None:
    sender = Sender()
    combiner = Combiner(sender, max_items=10, max_size=100)
    with ThreadPoolExecutor(5) as pool:
        first = pool.submit(combiner.call, "a")
        assert sender.first_started.wait(10)
        rest = {item: pool.submit(combiner.call, item) for item in "bcde"}
        _waiting(combiner, 4)
        sender.release.set()
        assert first.result(10) == "A"
        assert {item: f.result(10) for item, f in rest.items()} == {i: i.upper() for i in "bcde"}
    assert sender.batches[0] == ["a"]
    assert sorted(sender.batches[1]) == ["b", "c", "d", "e"]


def test_a_batch_that_fails_fails_each_of_its_callers_and_the_next_one_runs() -> None:
    sender = Sender(fail_on="c")
    combiner = Combiner(sender, max_items=2, max_size=100)
    with ThreadPoolExecutor(5) as pool:
        first = pool.submit(combiner.call, "a")
        assert sender.first_started.wait(10)
        calls = {}
        for item in "bcd":  # one at a time: b and c are the next batch, d the one after
            calls[item] = pool.submit(combiner.call, item)
            _waiting(combiner, len(calls))
        sender.release.set()
        assert first.result(10) == "A"
        for item in "bc":
            with pytest.raises(ValueError, match="refused c"):
                calls[item].result(10)
        assert calls["d"].result(10) == "D"
    assert sender.batches == [["a"], ["b", "c"], ["d"]]


def test_batches_keep_to_the_count_and_the_size_and_a_large_item_goes_alone() -> None:
    sender = Sender()
    combiner = Combiner(sender, max_items=3, max_size=10)
    sizes = {"b": 4, "c": 4, "d": 4, "e": 1, "f": 1, "g": 1, "h": 1, "i": 50, "j": 1}
    with ThreadPoolExecutor(12) as pool:
        first = pool.submit(combiner.call, "a", 1)
        assert sender.first_started.wait(10)
        calls = []
        for item, size in sizes.items():
            calls.append(pool.submit(combiner.call, item, size))
            _waiting(combiner, len(calls))
        sender.release.set()
        assert first.result(10) == "A"
        assert [f.result(10) for f in calls] == [item.upper() for item in sizes]
    assert sender.batches == [["a"], ["b", "c"], ["d", "e", "f"], ["g", "h"], ["i"], ["j"]]
