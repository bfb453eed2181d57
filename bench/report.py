"""The results as JSON and as a markdown report (the targets first, then the details).

Every figure measured over rounds is shown as its median with its spread over the
rounds in parentheses (min to max).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.checks import Check, Figure, build_checks, figure

__all__ = ["render_markdown", "write_results"]

TIMES = "\u00d7"
METHODS = ("celery", "rabbitmq")


def _num(value: float | None, unit: str = "") -> str:
    if value is None:
        return "n/a"
    if math.isinf(value):
        return "timeout"
    text = f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"
    return f"{text} {unit}".strip()


def _fig(value: Figure | None, unit: str = "") -> str:
    """``median unit (min to max)``; without a spread when there is a single value."""
    if value is None or value.median is None:
        return "n/a"
    text = _num(value.median, unit)
    if value.low is not None and value.high is not None and value.low != value.high:
        text += f" ({_num(value.low)}\u2013{_num(value.high)})"
    return text


def _at(node: Any, *path: str, unit: str = "", scale: float = 1.0) -> str:
    return _fig(figure(node, *path).scaled(scale), unit)


def _mib(value: Any) -> str:
    return f"{value / 2**20:.0f} MiB" if isinstance(value, int | float) and value else "n/a"


def _targets(checks: list[Check]) -> list[str]:
    lines = [
        "| metric | baseline or peer | system | ratio of medians | target | result |",
        "|---|---|---|---|---|---|",
    ]
    for check in checks:
        baseline = (
            f"{_fig(check.baseline, check.unit)} ({check.baseline_name})"
            if check.baseline_name
            else "—"
        )
        ratio = f"{check.ratio:.2f}{TIMES}" if check.ratio is not None else "—"
        lines.append(
            f"| {check.metric} | {baseline} | {_fig(check.system, check.unit)} | {ratio} "
            f"| {check.target} | {'pass' if check.passed else '**FAIL**'} |"
        )
    return lines


def _peers(results: dict[str, Any]) -> list[str]:
    system = results.get("system", {}).get("drain", {})
    rows = [(f"tasklab, {m}", system.get(m)) for m in METHODS]
    rows += [(entry.get("label", name), entry) for name, entry in results.get("peers", {}).items()]
    rows.append(
        (
            "raw Celery worker (no status tracking)",
            results.get("baselines", {}).get("raw_celery", {}).get("drain"),
        )
    )
    lines = [
        "| system or peer | tasks/s | CPU per task | of which while submitting "
        "| CPU per task by process (ms) | final status read from | runs |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, entry in rows:
        entry = entry or {}
        services = entry.get("cpu_ms_per_task_by_service", {})
        by_service = ", ".join(
            f"{name} {_num(value)}" for name, value in services.items() if value is not None
        )
        runs = len(entry.get("runs", []))
        lines.append(
            f"| {label} | {_at(entry, 'rate')} | {_at(entry, 'cpu_ms_per_task', unit='ms')} "
            f"| {_at(entry, 'cpu_ms_per_task_preloading', unit='ms')} | {by_service or 'n/a'} "
            f"| {entry.get('where', 'n/a')} | {runs} |"
        )
    return lines


def _baselines(base: dict[str, Any]) -> list[str]:
    lines = [
        "| baseline | rate | p50 | p99 | client CPU per request | runs |",
        "|---|---|---|---|---|---|",
    ]
    for key, label in (
        ("bare", "bare FastAPI endpoint"),
        ("publish", "endpoint + confirmed persistent publish"),
        ("naive", "naive: a new pika connection per request (no target)"),
    ):
        stats = base.get(key, {})
        lines.append(
            f"| {label} | {_at(stats, 'rate', unit='req/s')} "
            f"| {_at(stats, 'latency.p50', unit='ms', scale=1000)} "
            f"| {_at(stats, 'latency.p99', unit='ms', scale=1000)} "
            f"| {_at(stats, 'client_cpu_ms_per_request', unit='ms')} "
            f"| {len(stats.get('runs', []))} |"
        )
    raw = base.get("raw_celery", {})
    drain = raw.get("drain", {})
    delay_rates = drain.get("delay_rates", [])
    lines += [
        "",
        "| raw Celery (no target) | value |",
        "|---|---|",
        f"| worker rate (no-op, concurrency {raw.get('concurrency', '?')}) "
        f"| {_at(drain, 'rate', unit='tasks/s')} |",
        f"| `.delay()` rate while preloading | "
        f"{', '.join(f'{rate:,.0f}' for rate in delay_rates) or 'n/a'} /s |",
        f"| round trip p50 / p99 | {_at(raw, 'round_trip.p50', unit='ms', scale=1000)} / "
        f"{_at(raw, 'round_trip.p99', unit='ms', scale=1000)} |",
        f"| `.get()` p50 / p99 | {_at(raw, 'get.p50', unit='ms', scale=1000)} / "
        f"{_at(raw, 'get.p99', unit='ms', scale=1000)} |",
    ]
    return lines


def _system(system: dict[str, Any]) -> list[str]:
    def both(section: str, path: str, unit: str = "", scale: float = 1.0) -> str:
        node = system.get(section, {})
        return " | ".join(_at(node, m, path, unit=unit, scale=scale) for m in METHODS)

    lines = [
        "| measurement | celery | rabbitmq |",
        "|---|---|---|",
        f"| submit rate (workers paused) | {both('submit', 'rate', 'req/s')} |",
        f"| submit latency p50 at the load's concurrency "
        f"| {both('submit', 'latency.p50', 'ms', 1000)} |",
        f"| submit latency p99 at the load's concurrency "
        f"| {both('submit', 'latency.p99', 'ms', 1000)} |",
        f"| drain: submissions/s while preloading | {both('drain', 'preload_rate', 'req/s')} |",
        f"| drain: last status seen after it was recorded "
        f"| {both('drain', 'seen_after_seconds', 'ms', 1000)} |",
        f"| submit → DONE p50, one task at a time | {both('latency', 'done.p50', 'ms', 1000)} |",
        f"| submit → DONE p99, one task at a time | {both('latency', 'done.p99', 'ms', 1000)} |",
        f"| submit → DONE seen on the live stream p50 "
        f"| {both('latency', 'visible.p50', 'ms', 1000)} |",
    ]
    sync = system.get("latency", {}).get("sync", {})
    rest = system.get("callback_at_rest", {})
    live = system.get("live", {})
    lines += [
        "",
        f"- Sync: p50 {_at(sync, 'p50', unit='ms', scale=1000)}, "
        f"p99 {_at(sync, 'p99', unit='ms', scale=1000)}.",
        f"- Callback → live stream at rest: p50 {_at(rest, 'p50', unit='ms', scale=1000)}, "
        f"p99 {_at(rest, 'p99', unit='ms', scale=1000)}; under load: p50 "
        f"{_at(live, 'callback_to_stream.p50', unit='ms', scale=1000)}, p99 "
        f"{_at(live, 'callback_to_stream.p99', unit='ms', scale=1000)}.",
        f"- Live load (Celery tasks submitted while the workers run, the live stream "
        f"followed): {_at(live, 'rate', unit='tasks/s')}, submit → DONE p50 "
        f"{_at(live, 'submit_to_done.p50', unit='ms', scale=1000)}.",
    ]
    return lines


def _memory(results: dict[str, Any]) -> list[str]:
    memory = results.get("system", {}).get("memory", {})
    at_rest, peak = memory.get("at_rest", {}), memory.get("under_load", {})
    lines = ["| memory (RSS) | at rest | peak during the drain section |", "|---|---|---|"]
    for name in dict.fromkeys([*at_rest, *peak]):
        lines.append(f"| {name} | {_mib(at_rest.get(name))} | {_mib(peak.get(name))} |")
    bare = results.get("baselines", {}).get("bare", {}).get("rss_bytes")
    lines.append(f"| bare FastAPI baseline, after its load | {_mib(bare)} | |")
    idle = results.get("idle_cpu", {})
    if idle:
        lines += [
            "",
            "CPU at rest before the drains, % of one core (counted in every drain window "
            "of its system): "
            + ", ".join(f"{name} {value:g}" for name, value in idle.items())
            + ".",
        ]
    return lines


def _scaling(scaling: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| worker slots | 1-s tasks per run | tasks/s | efficiency | run time p50 / max "
        "(first run) | worker RSS |",
        "|---|---|---|---|---|---|",
    ]
    for row in scaling:
        first = (row.get("runs") or [{}])[0]
        run_p50 = _num(first.get("run_seconds", {}).get("p50"), "s")
        run_max = _num(first.get("run_seconds", {}).get("max"), "s")
        lines.append(
            f"| {row.get('slots')} | {row.get('tasks', 'n/a')} | {_at(row, 'rate')} "
            f"| {_at(row, 'efficiency')} | {run_p50} / {run_max} "
            f"| {_mib(row.get('worker_rss_bytes'))} |"
        )
    return lines


def render_markdown(results: dict[str, Any], checks: list[Check]) -> str:
    meta = results.get("meta", {})
    rounds = meta.get("plan", {})
    failed = [check for check in checks if not check.passed]
    lines = [
        "# tasklab benchmark",
        "",
        f"Run {meta.get('started', '?')} on commit `{meta.get('commit', '?')}`, "
        f"{meta.get('cpus', '?')} CPUs, Python {meta.get('python', '?')}; "
        f"{meta.get('seconds', 0):.0f} s in all (`{meta.get('command', 'make bench')}`). "
        f"{rounds.get('rounds', '?')} interleaved rounds of the drains "
        f"(N = {rounds.get('drain_tasks', '?')} tasks), {rounds.get('fast_rounds', '?')} of "
        "the submissions and latencies; each figure is the median of the rounds with "
        "their spread (min to max) in parentheses.",
        "",
        f"**{len(checks) - len(failed)} of {len(checks)} targets met.**",
        "",
        *_targets(checks),
    ]
    errors = results.get("errors", [])
    if errors:
        lines += ["", "## Errors", ""]
        lines += [f"- {error['phase']}: {error['error']}" for error in errors]
    lines += [
        "",
        "## The system and its peers: N preloaded no-op tasks",
        "",
        *_peers(results),
        "",
        "## Baselines",
        "",
        *_baselines(results.get("baselines", {})),
        "",
        "## System",
        "",
        *_system(results.get("system", {})),
        "",
        *_memory(results),
    ]
    scaling = results.get("system", {}).get("scaling", [])
    if scaling:
        lines += ["", *_scaling(scaling)]
    phases = results.get("phases", {})
    lines += ["", "## Phases", "", "| phase | seconds |", "|---|---|"]
    lines += [f"| {name} | {seconds:.1f} |" for name, seconds in phases.items()]
    return "\n".join(lines) + "\n"


def write_results(results: dict[str, Any], out_dir: Path) -> list[Check]:
    """``results.json`` (every figure, every run, the checks) and ``results.md``."""
    checks = build_checks(results)
    out_dir.mkdir(parents=True, exist_ok=True)
    data = {**results, "checks": [{**asdict(check), "target": check.target} for check in checks]}
    text = json.dumps(_finite(data), indent=2, allow_nan=False, default=str)
    (out_dir / "results.json").write_text(text + "\n")
    (out_dir / "results.md").write_text(render_markdown(results, checks))
    return checks


def _finite(value: Any) -> Any:
    """``value`` with NaN and infinities replaced by None (JSON has neither)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(key): _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value
