"""The callback → live stream probe, run by :class:`bench.latency.CallbackProbe` in a
process of its own.

``python -m bench.probe API_BASE_URL CALLBACK_URL GAP TASK_ID...`` (the callback
secret in ``BENCH_CALLBACK_SECRET``): follows the api's live stream, prints ``ready``,
sends the signed reports of :func:`bench.latency.callback_latency` and prints
``{"latencies": [...], "timeouts": n}``.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys

from bench.events import EventStream
from bench.latency import PROBE_SECRET_ENV, callback_latency


async def _probe(base_url: str, callback_url: str, gap: float, task_ids: list[str]) -> None:
    stream = EventStream(base_url)
    try:
        await stream.start()
        print("ready", flush=True)
        latencies, timeouts = await callback_latency(
            callback_url, os.environ[PROBE_SECRET_ENV], stream, task_ids, gap
        )
    finally:
        await stream.close()
    print(json.dumps({"latencies": latencies, "timeouts": timeouts}), flush=True)


def main(argv: list[str]) -> None:
    if len(argv) < 4:
        sys.exit(__doc__)
    base_url, callback_url, gap, *task_ids = argv
    asyncio.run(_probe(base_url, callback_url, float(gap), task_ids))


if __name__ == "__main__":
    main(sys.argv[1:])
