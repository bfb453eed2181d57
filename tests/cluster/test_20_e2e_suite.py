"""`make e2e-kind` on the real cluster: the whole e2e suite against the release (the
UI tests in Chromium among them, and the scaling test: three worker pods share nine
tasks). The public port through the NodePort that kind publishes (as `make kind-up`
users open it; a `kubectl port-forward` ends for good on the first reset connection,
and its streams lag on a loaded machine), the internal one through a port-forward."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from e2eclient import Target

from tasklab_devtools.cluster.handle import NAMESPACE, Cluster
from tasklab_devtools.kube import Release

ROOT = Path(__file__).resolve().parents[2]


def test_the_e2e_suite_passes_against_the_release(
    installed: Cluster, release: Release, target: Target, artifacts: Path
) -> None:
    log = artifacts / "cluster-e2e.log"
    env = {
        **installed.env,
        "TASKLAB_E2E_TARGET": "kind",
        "TASKLAB_E2E_URL": target.base_url,
        "TASKLAB_E2E_NAMESPACE": NAMESPACE,
        "TASKLAB_ARTIFACTS": str((artifacts / "cluster-e2e").absolute()),
    }
    with log.open("w") as out:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "tests/e2e",
                "-p",
                "no:cacheprovider",
                "-q",
                "--durations=25",
            ],
            cwd=ROOT,
            env={k: v for k, v in env.items() if k != "PYTEST_CURRENT_TEST"},
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=1800,
            check=False,
        )
    summary = log.read_text().splitlines()[-15:]
    assert done.returncode == 0, "\n".join(summary)
    assert any("passed" in line for line in summary), summary
    assert os.path.getsize(log) > 0
