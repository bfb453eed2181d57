"""The targets: ratios of medians over interleaved rounds, missing data fails."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path
from typing import Any

import pytest

from bench.checks import build_checks
from bench.common import Budget, Context, PhaseTimer, Plan
from bench.report import write_results
from bench.rounds import Variant, aggregate, interleave, spread


def runs(*values: float, key: str = "rate") -> dict[str, Any]:
    return {"runs": [{key: v} for v in values], **aggregate([{key: v} for v in values], key)}


def results() -> dict[str, Any]:
    drain = {
        "celery": runs(90, 100, 400)
        | aggregate([{"cpu_ms_per_task": v} for v in (3, 4, 9)], "cpu_ms_per_task"),
        "rabbitmq": runs(120, 110, 130)
        | aggregate([{"cpu_ms_per_task": v} for v in (2, 2.5, 3)], "cpu_ms_per_task"),
    }
    return {
        "baselines": {
            "publish": runs(1000, 2000, 1500),
            "raw_celery": {
                **aggregate(
                    [{"round_trip": {"p50": v}} for v in (0.001, 0.002, 0.0015)], "round_trip.p50"
                ),
                **aggregate([{"get": {"p50": v}} for v in (0.002, 0.002)], "get.p50"),
            },
        },
        "peers": {
            "celery-postgres": runs(100, 110, 50)
            | aggregate([{"cpu_ms_per_task": v} for v in (4, 5, 1)], "cpu_ms_per_task"),
            "celery-redis": runs(300, 200, 250),
        },
        "system": {
            "submit": {"celery": runs(900, 950, 1000), "rabbitmq": runs(800, 1000, 600)},
            "drain": drain,
            "latency": {
                "celery": aggregate(
                    [{"done": {"p50": v}} for v in (0.005, 0.006, 0.007)], "done.p50"
                ),
                "rabbitmq": aggregate(
                    [{"done": {"p50": v}} for v in (0.004, 0.004, 0.2)], "done.p50"
                ),
                "sync": aggregate([{"p50": v} for v in (0.009, 0.01)], "p50"),
            },
            "scaling": [
                {"slots": 16, "efficiency": spread([0.5])},
                {"slots": 32, "efficiency": spread([0.95, 0.85, 0.92])},
            ],
            "live": aggregate(
                [
                    {"callback_to_stream": {"p99": v}, "callback_timeouts": 0}
                    for v in (0.05, 0.08, 0.3)
                ],
                "callback_to_stream.p99",
                "callback_timeouts",
            ),
        },
    }


def by_metric(data: dict[str, Any]) -> dict[tuple[str, str], Any]:
    return {(check.metric, check.baseline_name): check for check in build_checks(data)}


def test_ratios_are_of_medians_and_every_target_of_the_issue_is_there() -> None:
    checks = by_metric(results())
    assert len(checks) == 13
    submit = checks[("submit rate, celery", "confirmed publish")]
    assert submit.ratio == pytest.approx(950 / 1500) and submit.passed
    assert submit.system.low == 900 and submit.system.high == 1000
    # A median, not a mean: the 400 of one round does not carry the ratio.
    pg = checks[("pipeline rate, celery", "Celery + PostgreSQL")]
    assert pg.ratio == pytest.approx(100 / 100) and pg.passed and pg.threshold == 1.0
    redis = checks[("pipeline rate, rabbitmq", "Celery + Redis")]
    assert redis.ratio == pytest.approx(120 / 250) and not redis.passed
    cpu = checks[("CPU per task, celery", "Celery + PostgreSQL")]
    assert cpu.ratio == pytest.approx(4 / 4) and cpu.passed and cpu.op == "<="
    assert checks[("CPU per task, rabbitmq", "Celery + PostgreSQL")].ratio == pytest.approx(2.5 / 4)
    latency = checks[("submit → DONE p50, celery", "raw round trip")]
    assert latency.ratio == pytest.approx(6 / 1.5) and latency.passed and latency.unit == "ms"
    assert checks[("sync p50", "raw .get()")].ratio == pytest.approx(4.75)
    assert not checks[("sync p50", "raw .get()")].passed
    scaling = checks[("scaling efficiency, 1-s tasks, 32 slots", "")]
    assert scaling.system.median == pytest.approx(0.92) and scaling.passed
    stream = checks[("callback → live stream p99, under load", "")]
    assert stream.system.median == pytest.approx(80) and stream.passed
    retired = {metric for metric, baseline in checks if baseline in ("naive", "raw worker")}
    assert not retired


def test_missing_figures_and_lost_reports_fail() -> None:
    data = results()
    del data["peers"]["celery-postgres"]
    data["system"]["scaling"] = data["system"]["scaling"][:1]  # no 32-slot row
    data["system"]["live"]["callback_timeouts"] = spread([0, 1, 0])
    checks = by_metric(data)
    assert not checks[("pipeline rate, celery", "Celery + PostgreSQL")].passed
    assert checks[("pipeline rate, celery", "Celery + PostgreSQL")].ratio is None
    assert not checks[("scaling efficiency, 1-s tasks, 32 slots", "")].passed
    stream = checks[("callback → live stream p99, under load", "")]
    assert stream.system.median == math.inf and not stream.passed


def test_the_report_and_json_are_written_even_when_empty(tmp_path: Path) -> None:
    checks = write_results({"meta": {}, "errors": [{"phase": "x", "error": "y"}]}, tmp_path)
    assert not any(check.passed for check in checks)
    text = (tmp_path / "results.md").read_text()
    assert "0 of 13 targets met" in text and "- x: y" in text
    assert (tmp_path / "results.json").read_text().startswith("{")
    full = write_results({"meta": {}, **results()}, tmp_path)
    assert sum(check.passed for check in full) == 9
    assert "| 100 tasks/s (90\u2013400) |" in (tmp_path / "results.md").read_text()


def test_rounds_interleave_and_a_failure_does_not_stop_the_others(tmp_path: Path) -> None:
    order: list[str] = []

    def variant(name: str, fail_in: int | None = None) -> Variant:
        async def run(index: int) -> int:
            order.append(f"{name}{index}")
            if index == fail_in:
                raise RuntimeError("boom")
            return index

        return Variant(name, run)

    ctx = Context(
        root=tmp_path,
        work=tmp_path,
        logs=tmp_path,
        node=None,  # type: ignore[arg-type]
        plan=Plan(),
        budget=Budget(60),
        timer=PhaseTimer(),
    )
    out = asyncio.run(interleave(ctx, "s", [variant("a"), variant("b", fail_in=1)], 3))
    assert order == ["a0", "b0", "a1", "b1", "a2", "b2"]
    assert out == {"a": [0, 1, 2], "b": [0, 2]}
    assert [error["phase"] for error in ctx.errors] == ["s: b, round 2"]
    assert spread([3.0, float("nan"), 1.0, 2.0]) == {
        "median": 2.0,
        "min": 1.0,
        "max": 3.0,
        "values": [3.0, 1.0, 2.0],
    }
