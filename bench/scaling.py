"""Scaling: the Celery worker restarted with 1, 2, 4, ... slots (``--concurrency``).

Per slot count: a warm-up of one short task per slot (so that every pool process has
run its first task: imports, its HTTP client), then ``scaling_repeats`` runs of
``scaling_rounds`` 1-s tasks per slot; efficiency = achieved tasks/s ÷ (slots x 1/s).
"""

from __future__ import annotations

from typing import Any

from bench.common import Context, say
from bench.loadgen import LoadGenerator
from bench.procstat import rss_bytes
from bench.rounds import spread
from bench.stack import SystemStack, epoch
from bench.stats import summarize

__all__ = ["scaling"]


async def _one_run(
    ctx: Context, system: SystemStack, load: LoadGenerator, slots: int
) -> dict[str, Any]:
    rounds = ctx.plan.scaling_rounds
    async with system.following() as stream:
        submitted = await system.submit(load, "celery", slots * rounds, duration=1)
        started = min(sent for sent, _ in submitted)
        done = await system.wait_done(
            stream, [task_id for _, task_id in submitted], timeout=rounds * 3 + 30
        )
    elapsed = max(epoch(task["finished_at"]) for task in done.values()) - started
    rate = len(done) / elapsed
    return {
        "seconds": elapsed,
        "rate": rate,
        "efficiency": rate / slots,  # each slot can do one 1-s task per second
        # Where the time went: each task's created → started and started → finished.
        "run_seconds": summarize(
            [float(task.get("run_seconds") or 0) for task in done.values()]
        ).as_dict(),
        "queue_wait_seconds": summarize(
            [float(task.get("queue_wait_seconds") or 0) for task in done.values()]
        ).as_dict(),
    }


async def scaling(
    ctx: Context, system: SystemStack, load: LoadGenerator, out: list[dict[str, Any]]
) -> None:
    """Every slot count of the plan, appended to ``out`` as it is measured; the worker
    is back at the stack's concurrency afterwards."""
    plan = ctx.plan
    try:
        for slots in plan.scaling_slots:
            ctx.budget.cap(plan.scaling_rounds + 10.0)
            await system.restart_worker(slots)
            async with system.following() as stream:
                warm = await system.submit(load, "celery", slots, duration=0.2)
                await system.wait_done(stream, [task_id for _, task_id in warm], 60)
            runs = []
            for _ in range(plan.scaling_repeats):
                ctx.budget.cap(plan.scaling_rounds + 10.0)
                runs.append(await _one_run(ctx, system, load, slots))
            efficiency = spread([run["efficiency"] for run in runs])
            out.append(
                {
                    "slots": slots,
                    "tasks": slots * plan.scaling_rounds,
                    "runs": runs,
                    "efficiency": efficiency,
                    "rate": spread([run["rate"] for run in runs]),
                    "worker_rss_bytes": rss_bytes(system.services()["celery-worker"]),
                }
            )
            say(
                f"  {slots:2d} slots: efficiency {efficiency['median']:.3f} "
                f"({efficiency['min']:.3f}-{efficiency['max']:.3f})"
            )
    finally:
        await system.restart_worker(plan.worker_concurrency)
