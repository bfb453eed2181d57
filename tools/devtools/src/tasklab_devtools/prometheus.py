"""A local Prometheus (Debian's package) scraping the local stack.

Used by ``make dev MONITORING=1`` and by the observability tests: the api's
``/metrics`` and the broker's prometheus endpoints (aggregated and per-queue
detailed metrics), every series labelled ``namespace`` like in a cluster, so the
dashboards' queries work unchanged.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from tasklab_devtools.procs import ManagedProcess, free_port, wait_http_ok

PROMETHEUS = "/usr/bin/prometheus"
#: The namespace label every scraped series gets (the dashboards filter on it).
LOCAL_NAMESPACE = "tasklab"


def ensure_prometheus() -> None:
    """Install Debian's prometheus (root) or say how."""
    if Path(PROMETHEUS).exists():
        return
    if shutil.which("apt-get") is None or not _is_root():
        raise RuntimeError(
            "prometheus is missing: sudo apt-get install -y --no-install-recommends prometheus"
        )
    env = {"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "prometheus"],
        check=True,
        env=env,
    )


def _is_root() -> bool:
    import os

    return os.geteuid() == 0


def _hostport(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port}"


@dataclass
class LocalPrometheus:
    """Prometheus on 127.0.0.1 with its own data dir, scraping every ``interval``."""

    base_dir: Path
    api_url: str
    broker_prometheus_url: str | None = None
    port: int = field(default_factory=free_port)
    interval: str = "2s"
    rule_files: list[Path] = field(default_factory=list)
    process: ManagedProcess | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def config(self) -> str:
        labels = f'{{namespace: "{LOCAL_NAMESPACE}"}}'
        jobs = [
            f"""  - job_name: api
    metrics_path: /metrics
    static_configs:
      - targets: ["{_hostport(self.api_url)}"]
        labels: {labels}"""
        ]
        if self.broker_prometheus_url:
            target = _hostport(self.broker_prometheus_url)
            jobs.append(
                f"""  - job_name: rabbitmq
    metrics_path: /metrics
    static_configs:
      - targets: ["{target}"]
        labels: {labels}
  - job_name: rabbitmq-detailed
    metrics_path: /metrics/detailed
    params:
      family: [queue_coarse_metrics, queue_consumer_count]
    static_configs:
      - targets: ["{target}"]
        labels: {labels}"""
            )
        rules = "".join(f'\n  - "{p}"' for p in self.rule_files)
        return (
            f"global:\n  scrape_interval: {self.interval}\n  evaluation_interval: {self.interval}\n"
            + (f"rule_files:{rules}\n" if rules else "")
            + "scrape_configs:\n"
            + "\n".join(jobs)
            + "\n"
        )

    def start(self, timeout: float = 60) -> None:
        ensure_prometheus()
        self.base_dir.mkdir(parents=True, exist_ok=True)
        cfg = self.base_dir / "prometheus.yml"
        cfg.write_text(self.config())
        self.process = ManagedProcess(
            "prometheus",
            [
                PROMETHEUS,
                f"--config.file={cfg}",
                f"--storage.tsdb.path={self.base_dir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--web.enable-lifecycle",
            ],
            env={"PATH": "/usr/bin:/bin"},
            log_path=self.base_dir / "prometheus.log",
        )
        self.process.start()
        wait_http_ok(f"{self.url}/-/ready", timeout, process=self.process)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process = None

    def __enter__(self) -> LocalPrometheus:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's result vector (raises on a query error)."""
        resp = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=30)
        body = resp.json()
        if body.get("status") != "success":
            raise ValueError(f"query failed: {expr}: {body.get('error')}")
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def wait_scraped(self, timeout: float = 60) -> None:
        """Until every target has been scraped successfully once."""
        deadline = time.monotonic() + timeout
        while True:
            targets = httpx.get(f"{self.url}/api/v1/targets", timeout=10).json()["data"]
            active = targets["activeTargets"]
            if active and all(t["health"] == "up" for t in active):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"targets not up: {[(t['scrapePool'], t['lastError']) for t in active]}"
                )
            time.sleep(0.5)
