"""Running the built images as Kubernetes would and checking that they work
(``make verify-images``): a read-only root filesystem, no capabilities, the image's
non-root user, against a private RabbitMQ node."""

from __future__ import annotations

import json
import re
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tasklab_devtools.images.build import SERVICES
from tasklab_devtools.images.engine import docker, say
from tasklab_devtools.procs import free_port
from tasklab_devtools.rabbitmq import RabbitNode, ensure_rabbitmq_server

#: The non-root UID every image runs as.
IMAGE_UID = 10001


# ------------------------------------------------------------------ run checks


#: How every container runs: as Kubernetes with the chart's securityContext would.
HARDENED_RUN = (
    "--network", "host",
    "--read-only",
    "--tmpfs", "/tmp:rw,nosuid,nodev,size=64m",  # noqa: S108 (the container's /tmp)
    "--cap-drop", "ALL",
    "--security-opt", "no-new-privileges",
)  # fmt: skip


@dataclass
class ImageRun:
    """The containers, volume and broker of one verification run (removed by close)."""

    tag: str
    repo: str
    log_dir: Path
    work_dir: Path
    label: str = field(default_factory=lambda: f"tasklab-verify-{secrets.token_hex(4)}")
    containers: list[str] = field(default_factory=list)
    volume: str | None = None

    def ref(self, service: str) -> str:
        return f"{self.repo}/{service}:{self.tag}"

    def run(
        self, service: str, env_file: Path, *args: str, detach: bool = True, role: str = ""
    ) -> str:
        """Start (or, with ``detach=False``, run to the end) a hardened container.

        It is named ``<label>-<service>[-<role>]``; its name is returned.
        """
        name = f"{self.label}-{service}" + (f"-{role}" if role else "")
        argv = ["run", "--name", name, "--label", self.label, *HARDENED_RUN]
        argv += ["--env-file", str(env_file)]
        if service == "api":
            argv += ["-v", f"{self.volume}:/data"]
        argv += ["-d"] if detach else []
        argv += [self.ref(service), *args]
        self.containers.append(name)
        done = docker(*argv, check=False, timeout=300)
        if done.returncode != 0:
            raise RuntimeError(
                f"{service} container failed ({done.returncode}):\n"
                f"{done.stdout[-3000:]}{done.stderr[-3000:]}{self.logs(name)}"
            )
        return name

    def logs(self, name: str) -> str:
        """A container's output, also saved to ``log_dir/<name>.log``."""
        done = docker("logs", name, check=False)
        text = done.stdout + done.stderr
        (self.log_dir / f"{name.removeprefix(self.label + '-')}.log").write_text(text)
        return text

    def inspect(self, name: str) -> dict[str, Any]:
        data: list[dict[str, Any]] = json.loads(docker("inspect", name).stdout)
        return data[0]

    def close(self) -> None:
        for name in self.containers:
            if docker("inspect", name, check=False).returncode == 0:
                self.logs(name)
                docker("rm", "-f", "-v", name, check=False)
        if self.volume is not None:
            docker("volume", "rm", "-f", self.volume, check=False)


def _process_uids(pid: int) -> set[int]:
    """Real, effective, saved and filesystem UIDs of a host process."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return {int(value) for value in line.split()[1:]}
    raise RuntimeError(f"no Uid line for pid {pid}")


def _wait_done(client: httpx.Client, task_id: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        task: dict[str, Any] = client.get(f"/api/tasks/{task_id}").raise_for_status().json()
        if task["status"] in ("DONE", "FAILED", "CANCELLED") or time.monotonic() >= deadline:
            return task
        time.sleep(0.2)


def check_images(run: ImageRun, timings: dict[str, float]) -> None:
    """Run the three images against a private broker and check a real task flow."""
    ensure_rabbitmq_server()
    node = RabbitNode.allocate("tasklab-images", run.work_dir / "rabbitmq")
    began = time.monotonic()
    node.start()
    timings["broker start"] = time.monotonic() - began
    try:
        api_port = free_port()
        secret = secrets.token_urlsafe(24)
        env_file = run.work_dir / "services.env"
        env_file.touch(mode=0o600)
        env_file.write_text(
            f"RMQ_URL={node.amqp_url}\n"
            f"CALLBACK_SECRET={secret}\n"
            f"API_HOST=127.0.0.1\nAPI_PORT={api_port}\n"
            f"API_URL=http://127.0.0.1:{api_port}/update_task_status_api/\n"
        )
        run.volume = docker("volume", "create", "--label", run.label).stdout.strip()

        began = time.monotonic()
        run.run("api", env_file, "migrate", detach=False, role="migrate")
        timings["api migrate (one-off container)"] = time.monotonic() - began
        say("api image: `migrate` alone ran in a read-only container")

        began = time.monotonic()
        names = {service: run.run(service, env_file) for service in SERVICES}
        base_url = f"http://127.0.0.1:{api_port}"
        with httpx.Client(base_url=base_url, timeout=30) as client:
            _wait_ready(client, run, names["api"], 90)
            timings["api ready"] = time.monotonic() - began
            say(f"api container ready on {base_url}")
            _check_ui_assets(client)
            _check_users(run, names)
            workers = _check_tasks(client, run, names, timings)
        began = time.monotonic()
        _check_celery_inspect(run, names["celery-worker"], workers["celery"])
        timings["celery inspect registered"] = time.monotonic() - began
        began = time.monotonic()
        _check_beat(run, env_file, names["celery-worker"])
        timings["celery beat: housekeeping ran"] = time.monotonic() - began
        _stop_all(run, names, timings)
        _check_stop_while_starting(run, env_file, timings)
    finally:
        began = time.monotonic()
        node.stop()
        timings["broker stop"] = time.monotonic() - began


def _wait_ready(client: httpx.Client, run: ImageRun, name: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last = "no answer"
    while True:
        state = run.inspect(name)["State"]
        if not state["Running"]:
            raise RuntimeError(f"the api container exited ({state['ExitCode']}):\n{run.logs(name)}")
        try:
            response = client.get("/readyz")
            if response.status_code == 200:
                return
            last = f"HTTP {response.status_code} {response.text[:200]}"
        except httpx.HTTPError as exc:
            last = f"{type(exc).__name__}: {exc}"
        if time.monotonic() >= deadline:
            raise TimeoutError(f"/readyz not 200 after {timeout:g} s ({last}):\n{run.logs(name)}")
        time.sleep(0.3)


def _check_ui_assets(client: httpx.Client) -> None:
    """The page and every script and stylesheet it loads, the chart library (built in
    the image's UI stage) among them, are served by the api itself."""
    page = client.get("/")
    assets = re.findall(r'(?:src|href)="(/static/[^"]+)"', page.text)
    if page.status_code != 200 or "/static/vendor/chart.umd.min.js" not in assets:
        raise RuntimeError(f"the api image's page does not load the chart library: {assets}")
    for asset in assets:
        got = client.get(asset)
        if got.status_code != 200 or not got.content:
            raise RuntimeError(f"the api image does not serve {asset}: HTTP {got.status_code}")
    say(f"api image: the page's {len(assets)} assets, Chart.js among them, are served")


def _check_users(run: ImageRun, names: dict[str, str]) -> None:
    for service, name in names.items():
        info = run.inspect(name)
        user = info["Config"]["User"]
        if not info["HostConfig"]["ReadonlyRootfs"]:
            raise RuntimeError(f"{service}: the root filesystem is not read-only")
        uids = _process_uids(int(info["State"]["Pid"]))
        if uids != {IMAGE_UID}:
            raise RuntimeError(f"{service}: runs with UIDs {sorted(uids)}, expected {IMAGE_UID}")
        say(f"{service}: image user {user!r}, process UID {IMAGE_UID}, read-only root fs")


def _check_tasks(
    client: httpx.Client, run: ImageRun, names: dict[str, str], timings: dict[str, float]
) -> dict[str, str]:
    """A task of each method, each DONE by the right worker; ``{method: worker name}``."""
    workers = {}
    submissions = {
        "celery": ({"method": "celery", "duration": 1}, "celery@"),
        "rabbitmq": ({"method": "rabbitmq", "kind": "process_data", "numbers": [1, 2, 3.5]},
                     "consumer@"),
        "sync": ({"method": "sync", "duration": 0.5}, "celery@"),
    }  # fmt: skip
    for method, (body, worker_prefix) in submissions.items():
        began = time.monotonic()
        response = client.post("/api/tasks", json=body)
        if response.status_code not in (200, 202):
            raise RuntimeError(f"{method} submission: HTTP {response.status_code} {response.text}")
        task = _wait_done(client, response.json()["id"], 60)
        worker = task.get("worker") or ""
        if task["status"] != "DONE" or not worker.startswith(worker_prefix):
            logs = "\n".join(f"--- {n}\n{run.logs(n)[-3000:]}" for n in names.values())
            raise RuntimeError(f"{method} task not DONE by {worker_prefix}: {task}\n{logs}")
        timings[f"{method} task DONE"] = time.monotonic() - began
        say(f"{method} task #{task['num']} DONE by {worker} ({task['result']})")
        workers[method] = worker
    return workers


def _check_celery_inspect(run: ImageRun, name: str, node: str) -> None:
    """The guide's ``celery -A celery_app inspect registered`` inside the worker.

    Asked of the worker ``node`` only, so the answer comes without waiting for the
    whole timeout.
    """
    done = docker(
        "exec", name, "celery", "-A", "celery_app", "inspect", "registered",
        "--destination", node, "--timeout", "10",
        check=False, timeout=60,
    )  # fmt: skip
    out = done.stdout + done.stderr
    if done.returncode != 0 or "process_task" not in out or "process_data" not in out:
        raise RuntimeError(f"celery inspect registered in the worker container failed:\n{out}")
    say("celery-worker: `celery -A celery_app inspect registered` lists both tasks")


#: The beat's command in the celery-worker image (its entrypoint is ``celery``), as in
#: the chart's ``celery-beat`` Deployment.
BEAT_ARGS = (
    "-A",
    "celery_app",
    "beat",
    "--loglevel=info",
    "--schedule",
    "/tmp/celerybeat-schedule",  # noqa: S108 (the container's own tmpfs)
)


def _check_beat(run: ImageRun, env_file: Path, worker: str, timeout: float = 60) -> None:
    """The beat from the celery-worker image sends housekeeping; a worker runs it
    (the api answers its signed request); the beat exits 0 on SIGTERM."""
    beat_env = run.work_dir / "beat.env"
    beat_env.touch(mode=0o600)
    beat_env.write_text(env_file.read_text() + "HOUSEKEEPING_INTERVAL=1\n")
    name = run.run("celery-worker", beat_env, *BEAT_ARGS, role="beat")
    deadline = time.monotonic() + timeout
    while "housekeeping: {" not in run.logs(worker):
        if time.monotonic() >= deadline:
            raise RuntimeError(
                f"no housekeeping run within {timeout:g} s:\n--- beat\n{run.logs(name)[-3000:]}"
                f"\n--- worker\n{run.logs(worker)[-3000:]}"
            )
        time.sleep(0.5)
    docker("stop", "--time", "10", name, timeout=60)
    code = run.inspect(name)["State"]["ExitCode"]
    if code != 0:
        raise RuntimeError(f"celery beat exited {code} on SIGTERM:\n{run.logs(name)[-3000:]}")
    say("celery-worker image: `celery beat` sent housekeeping, a worker ran it; exit 0")


def _stop_all(run: ImageRun, names: dict[str, str], timings: dict[str, float]) -> None:
    """``docker stop`` each container (workers first): each must exit 0 on SIGTERM."""
    for service in ("consumer", "celery-worker", "api"):
        name = names[service]
        began = time.monotonic()
        docker("stop", "--time", "30", name, timeout=90)
        seconds = time.monotonic() - began
        code = run.inspect(name)["State"]["ExitCode"]
        run.logs(name)
        timings[f"{service} stop"] = seconds
        if code != 0:
            raise RuntimeError(f"{service} exited {code} on SIGTERM:\n{run.logs(name)[-3000:]}")
        say(f"{service}: exit 0 on SIGTERM after {seconds:.1f} s")


#: The grace ``docker stop`` gives a container stopped as it starts: one that ignored the
#: SIGTERM would be killed (137) only when it ends.
EARLY_STOP_GRACE = 20


def _check_stop_while_starting(run: ImageRun, env_file: Path, timings: dict[str, float]) -> None:
    """Each image stopped the moment it started (before Python could install a handler)
    ends on the SIGTERM, not on the SIGKILL at the end of the grace: its tini passes the
    signal on (a Python PID 1 would ignore it; a pod deleted while starting then waited
    out its whole grace period)."""
    for service in SERVICES:
        name = run.run(service, env_file, role="early-stop")
        began = time.monotonic()
        docker("stop", "--time", str(EARLY_STOP_GRACE), name, timeout=90)
        seconds = time.monotonic() - began
        code = run.inspect(name)["State"]["ExitCode"]
        timings[f"{service} stopped while starting"] = seconds
        if code == 137 or seconds > EARLY_STOP_GRACE / 2:
            raise RuntimeError(
                f"{service} stopped while starting: exit {code} after {seconds:.1f} s (the "
                f"SIGTERM was not acted on):\n{run.logs(name)[-3000:]}"
            )
        say(f"{service}: stopped while starting, exit {code} after {seconds:.1f} s")
