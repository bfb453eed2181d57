"""``make test``'s test run: the cluster tier beside the tiers on local processes.

The cluster tier (``tests/cluster``, about 20 minutes) spends most of its time waiting
on Kubernetes: rollouts, scale-downs that let 20-second tasks finish, the autoscalers'
windows. So it runs at the same time as the other tiers (unit, e2e, UI, faults, chart,
monitoring, images), which keeps ``make test`` near the longer of the two instead of
their sum. The cluster tier starts first (its node takes a while to come up, longer
while a cold build of its programs runs); its output goes to
``artifacts/cluster-test.log`` and is printed once both are done, so the two never
interleave. The exit status is non-zero when either tier failed; Ctrl-C stops both
(the cluster tier still stops its cluster).

    python -m tasklab_devtools.tiers [PYTEST ARGS...]
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["main"]

LOCAL = ["libs", "services", "tools", "tests", "--ignore=tests/cluster"]


def _say(message: str) -> None:
    print(f"\n\033[1m==> {message}\033[0m", flush=True)


def _pytest(*args: str) -> list[str]:
    return [sys.executable, "-m", "pytest", *args]


def main(argv: list[str] | None = None) -> int:
    extra = list(sys.argv[1:] if argv is None else argv)
    artifacts = Path(os.environ.get("TASKLAB_ARTIFACTS", "artifacts"))
    artifacts.mkdir(parents=True, exist_ok=True)
    log = artifacts / "cluster-test.log"
    began = time.monotonic()
    with log.open("wb") as out:
        cluster = subprocess.Popen(
            _pytest("tests/cluster", "--durations=15", *extra),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    _say(f"the cluster tier runs beside the others (pid {cluster.pid}; output: {log})")
    try:
        local = subprocess.run(_pytest(*LOCAL, "--durations=15", *extra), check=False).returncode
        local_took = time.monotonic() - began
        _say(f"the tiers on local processes: exit {local} after {local_took:.0f} s")
        if cluster.poll() is None:
            _say("waiting for the cluster tier")
        code = cluster.wait()
    except KeyboardInterrupt:
        # SIGINT to the tier's session: pytest stops and its fixtures stop the cluster.
        os.killpg(cluster.pid, signal.SIGINT)
        cluster.wait()
        raise
    _say(f"the cluster tier (exit {code} after {time.monotonic() - began:.0f} s):")
    sys.stdout.write(log.read_text(errors="replace"))
    sys.stdout.flush()
    return local or code


if __name__ == "__main__":
    sys.exit(main())
