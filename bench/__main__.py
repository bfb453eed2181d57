"""``python -m bench``: baselines and the system in one run; see ``bench/README.md``.

Exit status 0 when every target is met, 1 when one is missed or a phase failed (the
results are written either way), 2 for a usage error.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Coroutine
from contextlib import ExitStack
from dataclasses import asdict, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from bench.common import Budget, Context, PhaseTimer, Plan, say
from bench.report import render_markdown, write_results
from bench.sections import SECTIONS, Run
from tasklab_devtools.rabbitmq import ensure_rabbitmq_server, private_node

ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")


def _run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run on uvloop when it is installed (as for the api), else on asyncio's loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()


#: Pathspecs of the files a run writes (excluded from the dirty check).
_OWN_OUTPUTS = (":(exclude)bench/results.md", ":(exclude)bench/results.json")


def _commit() -> str:
    try:
        sha = _git("rev-parse", "--short", "HEAD")
        # The bench's own earlier results do not make the code it measures dirty.
        dirty = _git("status", "--porcelain", "--untracked-files=no", "--", ".", *_OWN_OUTPUTS)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{sha}-dirty" if dirty else sha


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="smaller counts, one repeat (to try it out)"
    )
    parser.add_argument(
        "--budget",
        type=float,
        default=None,
        help="seconds the whole run may take; later phases are skipped past it "
        "(default 1800, with --quick 420)",
    )
    parser.add_argument(
        "--sections",
        default=",".join(SECTIONS),
        help=f"the sections to run, comma-separated (default {','.join(SECTIONS)}); "
        "the targets of the others fail for want of data",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=None,
        help="interleaved rounds of every section (default: 3 for the drains, "
        "5 for the others; with --quick 2)",
    )
    parser.add_argument(
        "--out", type=Path, default=ROOT / "bench", help="where results.json/.md go"
    )
    parser.add_argument(
        "--logs",
        type=Path,
        default=ROOT / "artifacts" / "logs-bench",
        help="process logs (default artifacts/logs-bench)",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        nargs="?",
        const=ROOT / "artifacts" / "bench-profiles",
        default=None,
        metavar="DIR",
        help="record the api and the workers with py-spy in the first round of the drains "
        "(and the api in the first submission round): the figures of a profiled run "
        "are not comparable",
    )
    args = parser.parse_args(argv)
    unknown = set(args.sections.split(",")) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections: {', '.join(sorted(unknown))}")
    return args


def run(args: argparse.Namespace, argv: list[str]) -> int:
    plan = Plan().quick() if args.quick else Plan()
    if args.rounds is not None:
        plan = replace(plan, rounds=args.rounds, fast_rounds=args.rounds)
    sections = tuple(name.strip() for name in args.sections.split(",") if name.strip())
    timer = PhaseTimer()
    budget = Budget(args.budget or (420.0 if args.quick else 1800.0))
    results: dict[str, Any] = {
        "meta": {
            "started": datetime.now(UTC).isoformat(timespec="seconds"),
            "commit": _commit(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "command": shlex.join(["python", "-m", "bench", *(argv or [])]),
            "plan": asdict(plan),
            "sections": list(sections),
            "profiled": args.profile is not None,
        },
        "baselines": {},
        "system": {},
        "peers": {},
    }
    args.logs.mkdir(parents=True, exist_ok=True)
    errors: list[dict[str, str]] = []
    try:
        ensure_rabbitmq_server()
        with tempfile.TemporaryDirectory(prefix="tasklab-bench-") as tmp, ExitStack() as stack:
            work = Path(tmp)
            with timer("start a private RabbitMQ node"):
                node = stack.enter_context(private_node("tasklab-bench", work / "rabbitmq"))
            stack.callback(say, "stopping the RabbitMQ node")
            ctx = Context(
                root=ROOT,
                work=work,
                logs=args.logs,
                node=node,
                plan=plan,
                budget=budget,
                timer=timer,
                profile_dir=args.profile,
                errors=errors,
            )
            _run_async(Run(ctx, results, sections).run())
    except Exception as exc:
        say(f"the run failed: {type(exc).__name__}: {exc}")
        traceback.print_exc()
        errors.append({"phase": "run", "error": f"{type(exc).__name__}: {exc}"})
    finally:
        results["errors"] = errors
        results["phases"] = timer.phases
        results["meta"]["seconds"] = round(budget.elapsed(), 1)
        checks = write_results(results, args.out)
        print(render_markdown(results, checks), flush=True)
    failed = [check for check in checks if not check.passed]
    for check in failed:
        say(f"target missed: {check.metric}: {check.target}")
    for error in errors:
        say(f"failed: {error['phase']}: {error['error']}")
    say(f"results in {args.out / 'results.md'} and results.json; {budget.elapsed():.0f} s in all")
    return 1 if failed or errors else 0


def main(argv: list[str] | None = None) -> int:
    started = time.monotonic()
    argv = sys.argv[1:] if argv is None else argv
    code = run(parse_args(argv), argv)
    say(f"done in {time.monotonic() - started:.0f} s")
    return code


if __name__ == "__main__":
    sys.exit(main())
