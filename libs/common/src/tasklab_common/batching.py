"""Concurrent calls from several threads combined into batches (leader and followers).

A thread that calls :meth:`Combiner.call` while no batch is on its way sends at once,
alone (the leader). Calls made while a batch is on its way wait; when it is back, the
first of them leads the next batch, which carries all the calls that waited (up to a
count and a size). Each caller gets its own outcome: its result, or the exception the
batch raised. No thread of its own, no timer: a call alone is never delayed, and under
load the batches grow by themselves.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

__all__ = ["Combiner", "fitting"]

Item = TypeVar("Item")
Result = TypeVar("Result")


def fitting(sizes: Sequence[int], max_items: int, max_size: int) -> int:
    """How many of the first items (of these sizes) make one batch: at most
    ``max_items``, their sizes adding up to at most ``max_size``; always at least one
    (an item larger than that goes alone)."""
    count, total = 0, 0
    for size in sizes:
        if count and (count == max_items or total + size > max_size):
            break
        count += 1
        total += size
    return count


class _Call(Generic[Item, Result]):
    def __init__(self, item: Item, size: int) -> None:
        self.item = item
        self.size = size
        #: Set when its batch is back (settled), or when it is to lead the next one.
        self.woken = threading.Event()
        self.result: Result | None = None
        self.error: BaseException | None = None
        self.settled = False


class Combiner(Generic[Item, Result]):
    """Calls of ``send(items) -> results`` (one result per item, in order) combined.

    ``send`` receives at most ``max_items`` items whose sizes add up to at most
    ``max_size`` (an item larger than that goes alone).
    """

    def __init__(
        self,
        send: Callable[[Sequence[Item]], Sequence[Result]],
        *,
        max_items: int,
        max_size: int,
    ) -> None:
        self._send = send
        self._max_items = max_items
        self._max_size = max_size
        self._lock = threading.Lock()
        self._waiting: list[_Call[Item, Result]] = []
        self._busy = False  # a batch is on its way (then a leader will wake the next)

    def call(self, item: Item, size: int = 0) -> Result:
        """``item`` sent in the next batch; its result, or the batch's exception."""
        mine: _Call[Item, Result] = _Call(item, size)
        with self._lock:
            self._waiting.append(mine)
            lead = not self._busy
            self._busy = True
        if not lead:
            mine.woken.wait()
        if not mine.settled:  # leading: the first waiting call is this one
            self._lead()
        if mine.error is not None:
            raise mine.error
        return mine.result  # type: ignore[return-value]

    def _lead(self) -> None:
        batch = self._take()
        try:
            results = self._send([c.item for c in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"{len(results)} results for {len(batch)} items")
        except BaseException as exc:
            for c in batch:
                c.error = exc
        else:
            for c, result in zip(batch, results, strict=True):
                c.result = result
        finally:
            for c in batch:
                c.settled = True
                c.woken.set()
            self._hand_over()

    def _take(self) -> list[_Call[Item, Result]]:
        with self._lock:
            sizes = [c.size for c in self._waiting]
            count = fitting(sizes, self._max_items, self._max_size)
            batch = self._waiting[:count]
            del self._waiting[:count]
        return batch

    def _hand_over(self) -> None:
        with self._lock:
            if self._waiting:
                self._waiting[0].woken.set()  # not settled: it leads the next batch
            else:
                self._busy = False
