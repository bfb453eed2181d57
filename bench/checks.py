"""The targets (issue 17), evaluated on the medians of the interleaved rounds.

Each ratio is the system's median over the baseline's or peer's median, both from
the same rounds. Missing data fails its target.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

__all__ = ["PEER_POSTGRES", "PEER_REDIS", "Check", "Figure", "build_checks", "figure"]

PEER_POSTGRES = "celery-postgres"
PEER_REDIS = "celery-redis"
METHODS = ("celery", "rabbitmq")
#: The slot count of the scaling target.
SCALING_SLOTS = 32


@dataclass(frozen=True)
class Figure:
    """A figure over the rounds: median and spread, in the check's unit."""

    median: float | None
    low: float | None = None
    high: float | None = None

    def scaled(self, factor: float) -> Figure:
        def times(value: float | None) -> float | None:
            return None if value is None else value * factor

        return Figure(times(self.median), times(self.low), times(self.high))


def figure(node: Any, *path: str) -> Figure:
    """The spread (``{"median", "min", "max"}``) at ``path`` in ``node`` as a Figure."""
    for key in path:
        node = node.get(key) if isinstance(node, dict) else None

    def number(value: Any) -> float | None:
        ok = isinstance(value, int | float) and math.isfinite(value)
        return float(value) if ok else None

    if not isinstance(node, dict):
        return Figure(None)
    return Figure(number(node.get("median")), number(node.get("min")), number(node.get("max")))


@dataclass(frozen=True)
class Check:
    """One row of the table: a system figure against a baseline and a target."""

    metric: str
    unit: str
    baseline_name: str
    baseline: Figure | None
    system: Figure
    ratio: float | None
    #: ``>=`` or ``<=``: how the ratio (or, without a baseline, the figure) must compare.
    op: str
    threshold: float
    passed: bool

    @property
    def target(self) -> str:
        suffix = "\u00d7" if self.baseline_name else f" {self.unit}"
        return f"{self.op} {self.threshold:g}{suffix}".rstrip()


def _check(
    metric: str,
    unit: str,
    baseline_name: str,
    baseline: Figure | None,
    system: Figure,
    op: str,
    threshold: float,
) -> Check:
    ratio: float | None = None
    value = system.median
    if baseline is not None:
        if value is not None and baseline.median:
            ratio = value / baseline.median
        value = ratio
    passed = value is not None and (value >= threshold if op == ">=" else value <= threshold)
    return Check(metric, unit, baseline_name, baseline, system, ratio, op, threshold, passed)


def build_checks(results: dict[str, Any]) -> list[Check]:
    """Every target of the benchmark, evaluated on ``results``."""
    base = results.get("baselines", {})
    system = results.get("system", {})
    peers = results.get("peers", {})
    drain = system.get("drain", {})
    checks: list[Check] = []
    for method in METHODS:
        checks.append(
            _check(
                f"submit rate, {method}",
                "req/s",
                "confirmed publish",
                figure(base, "publish", "rate"),
                figure(system, "submit", method, "rate"),
                ">=",
                0.6,
            )
        )
    for peer, label, threshold in (
        (PEER_POSTGRES, "Celery + PostgreSQL", 1.0),
        (PEER_REDIS, "Celery + Redis", 0.5),
    ):
        for method in METHODS:
            checks.append(
                _check(
                    f"pipeline rate, {method}",
                    "tasks/s",
                    label,
                    figure(peers, peer, "rate"),
                    figure(drain, method, "rate"),
                    ">=",
                    threshold,
                )
            )
    for method in METHODS:
        checks.append(
            _check(
                f"CPU per task, {method}",
                "ms",
                "Celery + PostgreSQL",
                figure(peers, PEER_POSTGRES, "cpu_ms_per_task"),
                figure(drain, method, "cpu_ms_per_task"),
                "<=",
                1.0,
            )
        )
    raw = base.get("raw_celery", {})
    for method in METHODS:
        checks.append(
            _check(
                f"submit → DONE p50, {method}",
                "ms",
                "raw round trip",
                figure(raw, "round_trip.p50").scaled(1000),
                figure(system, "latency", method, "done.p50").scaled(1000),
                "<=",
                4,
            )
        )
    checks.append(
        _check(
            "sync p50",
            "ms",
            "raw .get()",
            figure(raw, "get.p50").scaled(1000),
            figure(system, "latency", "sync", "p50").scaled(1000),
            "<=",
            4,
        )
    )
    rows = [row for row in system.get("scaling", []) if row.get("slots") == SCALING_SLOTS]
    checks.append(
        _check(
            f"scaling efficiency, 1-s tasks, {SCALING_SLOTS} slots",
            "",
            "",
            None,
            figure(rows[0], "efficiency") if rows else Figure(None),
            ">=",
            0.9,
        )
    )
    live = system.get("live", {})
    p99 = figure(live, "callback_to_stream.p99").scaled(1000)
    if figure(live, "callback_timeouts").high:  # a report never seen on the stream
        p99 = Figure(math.inf, p99.low, math.inf)
    checks.append(_check("callback → live stream p99, under load", "ms", "", None, p99, "<=", 100))
    return checks
