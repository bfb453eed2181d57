"""Interleaved rounds: every variant once per round, the rounds one after the other.

A slow minute of a shared machine then slows one run of *every* variant instead of
all the runs of one, and a ratio of medians stays close to what it would be on a
quiet machine. Each figure is reported as its median and its spread (min to max) over
the rounds.
"""

from __future__ import annotations

import traceback
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from bench.common import BudgetExceeded, Context, say
from bench.stats import median

__all__ = ["Variant", "aggregate", "interleave", "spread"]


@dataclass(frozen=True)
class Variant:
    """One thing measured once per round: ``run(round_index)`` returns its figures."""

    name: str
    run: Callable[[int], Awaitable[Any]]


async def interleave(
    ctx: Context, section: str, variants: Sequence[Variant], rounds: int
) -> dict[str, list[Any]]:
    """Each variant once per round, in order, ``rounds`` times; the results by name.

    A failing run is recorded in ``ctx.errors`` and the others go on; when the time
    budget is spent, the section ends with the rounds done so far.
    """
    results: dict[str, list[Any]] = {variant.name: [] for variant in variants}
    for index in range(rounds):
        say(f"{section}: round {index + 1} of {rounds}")
        for variant in variants:
            try:
                ctx.budget.cap(1.0)
            except BudgetExceeded as exc:
                ctx.error(f"{section}, round {index + 1}", exc)
                say(f"{section}: {exc}; stopping after {index} rounds")
                return results
            try:
                results[variant.name].append(await variant.run(index))
            except Exception as exc:
                say(f"{section}: {variant.name} failed in round {index + 1}: {exc!r}")
                traceback.print_exc()
                ctx.error(f"{section}: {variant.name}, round {index + 1}", exc)
    return results


def spread(values: Sequence[float]) -> dict[str, Any]:
    """Median, min and max of a figure over the rounds, and every value."""
    finite = [float(value) for value in values if value == value]  # drop NaN
    if not finite:
        return {"median": None, "min": None, "max": None, "values": []}
    return {
        "median": median(finite),
        "min": min(finite),
        "max": max(finite),
        "values": [round(value, 6) for value in finite],
    }


def aggregate(runs: Sequence[dict[str, Any]], *paths: str) -> dict[str, Any]:
    """The spread of each figure at ``paths`` (dotted keys) over ``runs``."""
    out: dict[str, Any] = {}
    for path in paths:
        values = []
        for run in runs:
            node: Any = run
            for key in path.split("."):
                node = node.get(key) if isinstance(node, dict) else None
            if isinstance(node, int | float):
                values.append(float(node))
        out[path] = spread(values)
    return out
