"""The targets, and the results as JSON and as a markdown table."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

__all__ = ["Check", "build_checks", "render_markdown", "write_results"]

TIMES = "\u00d7"  # the multiplication sign


@dataclass(frozen=True)
class Check:
    """One row of the table: a system figure against a baseline and a target."""

    metric: str
    unit: str
    baseline_name: str
    baseline: float | None
    system: float | None
    ratio: float | None
    #: ``>=`` or ``<=``: how the ratio (or, without a baseline, the figure) must compare.
    op: str
    threshold: float
    passed: bool

    @property
    def target(self) -> str:
        suffix = TIMES if self.baseline_name else f" {self.unit}"
        return f"{self.op} {self.threshold:g}{suffix}"


def _get(data: dict[str, Any], *path: str | int) -> float | None:
    node: Any = data
    for key in path:
        try:
            node = node[key]
        except (KeyError, IndexError, TypeError):
            return None
    if isinstance(node, int | float) and math.isfinite(node):
        return float(node)
    return None


def _check(
    metric: str,
    unit: str,
    baseline_name: str,
    baseline: float | None,
    system: float | None,
    op: str,
    threshold: float,
    ratio_of: Callable[[float, float], float] = lambda system, baseline: system / baseline,
) -> Check:
    ratio: float | None = None
    value: float | None = system
    if baseline_name:
        if system is not None and baseline is not None and baseline > 0:
            ratio = ratio_of(system, baseline)
        value = ratio
    passed = value is not None and (value >= threshold if op == ">=" else value <= threshold)
    return Check(metric, unit, baseline_name, baseline, system, ratio, op, threshold, passed)


def build_checks(results: dict[str, Any]) -> list[Check]:
    """Every target of the benchmark, evaluated on ``results`` (missing data fails)."""
    base = results.get("baselines", {})
    system = results.get("system", {})
    publish = _get(base, "publish", "rate")
    naive = _get(base, "naive", "rate")
    worker = _get(base, "raw_celery", "worker_rate")
    round_trip = _get(base, "raw_celery", "round_trip", "p50")
    get = _get(base, "raw_celery", "get", "p50")
    checks: list[Check] = []
    for method in ("celery", "rabbitmq"):
        rate = _get(system, "submit", method, "rate")
        checks.append(
            _check(f"submit rate, {method}", "req/s", "confirmed publish", publish, rate, ">=", 0.6)
        )
    for method in ("celery", "rabbitmq"):
        rate = _get(system, "submit", method, "rate")
        checks.append(_check(f"submit rate, {method}", "req/s", "naive", naive, rate, ">=", 10))
    for method in ("celery", "rabbitmq"):
        rate = _get(system, "pipeline", method, "rate")
        checks.append(
            _check(f"pipeline rate, {method}", "tasks/s", "raw worker", worker, rate, ">=", 0.4)
        )
    for method in ("celery", "rabbitmq"):
        p50 = _get(system, "latency", method, "done", "p50")
        checks.append(
            _check(
                f"submit → DONE p50, {method}",
                "ms",
                "raw round trip",
                _ms(round_trip),
                _ms(p50),
                "<=",
                8,
            )
        )
    sync = _get(system, "latency", "sync", "p50")
    checks.append(_check("sync p50", "ms", "raw .get()", _ms(get), _ms(sync), "<=", 8))
    for slots_row in system.get("scaling", []):
        slots = int(slots_row["slots"])
        checks.append(
            _check(
                f"scaling efficiency, {slots} slots, 1-s tasks",
                "tasks/s",
                "ideal",
                float(slots),
                _get(slots_row, "rate"),
                ">=",
                0.9,
            )
        )
    if not system.get("scaling"):
        checks.append(_check("scaling efficiency, 1-s tasks", "", "ideal", None, None, ">=", 0.9))
    for when in ("at_rest", "under_load"):
        p99 = _get(system, "callback_to_stream", when, "p99")
        timeouts = _get(system, "callback_to_stream", f"{when}_timeouts")
        if timeouts:  # a report never seen on the stream is a miss, whatever the others did
            p99 = math.inf
        label = when.replace("_", " ")
        checks.append(_check(f"callback → live stream p99, {label}", "s", "", None, p99, "<=", 1))
    return checks


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000


def _fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return "n/a"
    if math.isinf(value):
        return "timeout"
    if unit in ("ms", "s") or abs(value) < 10:
        text = f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    else:
        text = f"{value:,.0f}"
    return f"{text} {unit}".strip()


def _mib(value: float | None) -> str:
    return "n/a" if value is None else f"{value / 2**20:.0f} MiB"


def render_markdown(results: dict[str, Any], checks: list[Check]) -> str:
    """The summary table, then the details: baselines, latencies, memory, scaling, phases."""
    meta = results.get("meta", {})
    base = results.get("baselines", {})
    system = results.get("system", {})
    failed = [check for check in checks if not check.passed]
    lines = [
        "# tasklab benchmark",
        "",
        f"Run {meta.get('started', '?')} on commit `{meta.get('commit', '?')}`, "
        f"{meta.get('cpus', '?')} CPUs, Python {meta.get('python', '?')}; "
        f"{meta.get('seconds', 0):.0f} s in all (`{meta.get('command', 'make bench')}`).",
        "",
        f"**{len(checks) - len(failed)} of {len(checks)} targets met.**",
        "",
        "| metric | baseline | system | ratio | target | result |",
        "|---|---|---|---|---|---|",
    ]
    for check in checks:
        baseline = (
            f"{_fmt(check.baseline, check.unit)} ({check.baseline_name})"
            if check.baseline_name
            else "—"
        )
        ratio = f"{check.ratio:.2f}{TIMES}" if check.ratio is not None else "—"
        lines.append(
            f"| {check.metric} | {baseline} | {_fmt(check.system, check.unit)} | {ratio} "
            f"| {check.target} | {'pass' if check.passed else '**FAIL**'} |"
        )
    errors = results.get("errors", [])
    if errors:
        lines += ["", "## Errors", ""]
        lines += [f"- {error['phase']}: {error['error']}" for error in errors]

    lines += [
        "",
        "## Baselines",
        "",
        "| baseline | rate | p50 | p99 | client CPU per request | repeats |",
        "|---|---|---|---|---|---|",
    ]
    for key, label in (
        ("bare", "bare FastAPI endpoint"),
        ("publish", "endpoint + confirmed persistent publish"),
        ("naive", "naive: a new pika connection per request"),
    ):
        stats = base.get(key, {})
        lines.append(
            f"| {label} | {_fmt(_get(stats, 'rate'), 'req/s')} "
            f"| {_fmt(_ms(_get(stats, 'latency', 'p50')), 'ms')} "
            f"| {_fmt(_ms(_get(stats, 'latency', 'p99')), 'ms')} "
            f"| {_fmt(_get(stats, 'client_cpu_ms_per_request'), 'ms')} "
            f"| {', '.join(str(rate) for rate in stats.get('rates', []))} |"
        )
    raw = base.get("raw_celery", {})
    lines += [
        "",
        "| raw Celery | value | repeats |",
        "|---|---|---|",
        f"| `.delay()` rate | {_fmt(_get(raw, 'delay_rate'), '/s')} "
        f"| {', '.join(str(rate) for rate in raw.get('delay_rates', []))} |",
        f"| worker rate (no-op, concurrency {raw.get('concurrency', '?')}) "
        f"| {_fmt(_get(raw, 'worker_rate'), 'tasks/s')} "
        f"| {', '.join(str(rate) for rate in raw.get('worker_rates', []))} |",
        f"| round trip p50 / p99 | {_fmt(_ms(_get(raw, 'round_trip', 'p50')), 'ms')} / "
        f"{_fmt(_ms(_get(raw, 'round_trip', 'p99')), 'ms')} | |",
        f"| `.get()` p50 / p99 | {_fmt(_ms(_get(raw, 'get', 'p50')), 'ms')} / "
        f"{_fmt(_ms(_get(raw, 'get', 'p99')), 'ms')} | |",
    ]

    lines += [
        "",
        "## System",
        "",
        "| measurement | celery | rabbitmq |",
        "|---|---|---|",
    ]

    def both(*paths: tuple[str, ...], unit: str = "", scale: float = 1.0) -> str:
        """Per method, the figures at ``paths`` (``section, *keys``) joined by " / "."""
        cells = []
        for method in ("celery", "rabbitmq"):
            figures = []
            for section, *keys in paths:
                value = _get(system, section, method, *keys)
                figures.append(_fmt(None if value is None else value * scale, unit))
            cells.append(" / ".join(figures))
        return " | ".join(cells)

    def spread(*prefix: str) -> str:
        """p50 / p99 in ms of the latency summary at ``prefix``, per method."""
        return both((*prefix, "p50"), (*prefix, "p99"), unit="ms", scale=1000.0)

    lines += [
        f"| submit rate (workers paused) | {both(('submit', 'rate'), unit='req/s')} |",
        f"| submit latency p50 / p99 at the load's concurrency | {spread('submit', 'latency')} |",
        f"| pipeline rate | {both(('pipeline', 'rate'), unit='tasks/s')} |",
        "| submissions/s during the pipeline "
        f"| {both(('pipeline', 'submit_rate_while_running'), unit='req/s')} |",
        f"| submit → DONE p50 / p99, one task at a time | {spread('latency', 'done')} |",
        f"| submit → DONE seen on the live stream p50 / p99 | {spread('latency', 'visible')} |",
        f"| submit → DONE p50 / p99 in the pipeline | {spread('pipeline', 'submit_to_done')} |",
    ]
    sync = system.get("latency", {}).get("sync", {})
    cb = system.get("callback_to_stream", {})
    lines += [
        "",
        f"Sync: p50 {_fmt(_ms(_get(sync, 'p50')), 'ms')}, "
        f"p99 {_fmt(_ms(_get(sync, 'p99')), 'ms')}. "
        f"Callback → live stream: at rest p50 {_fmt(_ms(_get(cb, 'at_rest', 'p50')), 'ms')} "
        f"/ p99 {_fmt(_ms(_get(cb, 'at_rest', 'p99')), 'ms')}, under load p50 "
        f"{_fmt(_ms(_get(cb, 'under_load', 'p50')), 'ms')} / p99 "
        f"{_fmt(_ms(_get(cb, 'under_load', 'p99')), 'ms')}.",
    ]

    memory = system.get("memory", {})
    lines += ["", "| memory (RSS) | at rest | peak under load |", "|---|---|---|"]
    for service in ("api", "celery-worker", "consumer", "rabbitmq"):
        lines.append(
            f"| {service} | {_mib(_get(memory, 'at_rest', service))} "
            f"| {_mib(_get(memory, 'under_load', service))} |"
        )
    lines.append(
        f"| bare FastAPI baseline, after its load | {_mib(_get(base, 'bare', 'rss_bytes'))} | |"
    )

    scaling = system.get("scaling", [])
    if scaling:
        lines += [
            "",
            "| worker slots | 1-s tasks | seconds | tasks/s | efficiency "
            "| run time p50 / max | worker RSS |",
            "|---|---|---|---|---|---|---|",
        ]
        for row in scaling:
            run_p50 = _fmt(_get(row, "run_seconds", "p50"), "s")
            run_max = _fmt(_get(row, "run_seconds", "max"), "s")
            lines.append(
                f"| {row['slots']} | {row['tasks']} | {row['seconds']:.2f} | {row['rate']:.2f} "
                f"| {row['efficiency']:.3f} | {run_p50} / {run_max} "
                f"| {_mib(row.get('worker_rss_bytes'))} |"
            )

    phases = results.get("phases", {})
    lines += ["", "## Phases", "", "| phase | seconds |", "|---|---|"]
    lines += [f"| {name} | {seconds:.1f} |" for name, seconds in phases.items()]
    return "\n".join(lines) + "\n"


def write_results(results: dict[str, Any], checks: list[Check], out_dir: Path) -> None:
    """``results.json`` (every figure, the checks) and ``results.md`` in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    data = {**results, "checks": [{**asdict(check), "target": check.target} for check in checks]}
    text = json.dumps(_finite(data), indent=2, allow_nan=False, default=str)
    (out_dir / "results.json").write_text(text + "\n")
    (out_dir / "results.md").write_text(render_markdown(results, checks))


def _finite(value: Any) -> Any:
    """``value`` with NaN and infinities replaced by None (JSON has neither)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(key): _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value
