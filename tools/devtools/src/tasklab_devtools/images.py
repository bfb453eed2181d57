"""Build the service images and check that they really run (make images, verify-images).

``python -m tasklab_devtools.images build --tag TAG`` builds ``services/*/Dockerfile``
(from the repository root) as ``tasklab/<service>:TAG`` and ``:dev`` with the Docker
engine that answers.

``python -m tasklab_devtools.images verify --tag TAG`` does everything itself:

1. uses the Docker engine that answers, or starts one that leaves the host's network
   alone (``dockerd --bridge=none --iptables=false --ip-forward=false
   --ip-masq=false``; Debian's ``docker.io`` is installed first when root and
   missing) and stops it at the end; the host's addresses, routes, iptables rules and
   ``ip_forward`` are compared before and after;
2. when the pinned base image (``ARG PYTHON_IMAGE`` of the Dockerfiles) is neither
   present nor pullable, makes a stand-in with ``debootstrap`` (Debian bookworm with
   its Python 3.11, and the host's CA bundle, which pip and uv in a build need where
   TLS is intercepted) and builds on it through that build argument; the stand-in is
   tagged :data:`STANDIN_IMAGE`, never with the official image's name;
3. builds the three images (``--network host``);
4. runs them as Kubernetes would, each with a read-only root filesystem, a tmpfs on
   ``/tmp``, every capability dropped, ``no-new-privileges`` and the image's own
   non-root user, on the host network against a private RabbitMQ node on 127.0.0.1:
   the api's ``migrate`` command alone, then the api (SQLite on a volume at ``/data``),
   the Celery worker and the consumer; checks ``/readyz``, a task of each method
   (celery, rabbitmq, sync) finished ``DONE`` by the right worker, ``celery -A
   celery_app inspect registered`` inside the worker container, the processes' UID,
   and a clean exit of every container on ``docker stop``;
5. removes its containers, volume, broker node and temporary files.

Logs (builds, containers, dockerd) go to ``artifacts/logs/images/``. Two runs at once
share one engine: the one that started it stops it when it ends, under the other.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import httpx

from tasklab_devtools.procs import ManagedProcess, free_port
from tasklab_devtools.rabbitmq import RabbitNode, ensure_rabbitmq_server

__all__ = [
    "IMAGE_UID",
    "SAFE_DOCKERD_FLAGS",
    "SERVICES",
    "STANDIN_IMAGE",
    "DockerEngine",
    "build_images",
    "main",
    "network_snapshot",
    "pinned_base_image",
]

#: The services with an image, each built from ``services/<name>/Dockerfile``.
SERVICES = ("api", "celery-worker", "consumer")
#: The only way dockerd may run on these machines: no bridge, no iptables or forwarding
#: changes. Containers then use ``--network host`` (or ``none``).
SAFE_DOCKERD_FLAGS = ("--bridge=none", "--iptables=false", "--ip-forward=false", "--ip-masq=false")
#: Name of the locally made base image (debootstrap), used when the pinned one is missing.
STANDIN_IMAGE = "tasklab/python-standin:3.11-bookworm"
#: The non-root UID every image runs as.
IMAGE_UID = 10001
DEBIAN_MIRROR = os.environ.get("DEBIAN_MIRROR", "http://deb.debian.org/debian")
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
_BASE_ARG = re.compile(r"^ARG PYTHON_IMAGE=(\S+)\s*$", re.MULTILINE)


def _say(message: str) -> None:
    print(f"[images] {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------ repository


def repo_root(start: Path | None = None) -> Path:
    """The repository root: the nearest folder upwards with ``services/api/Dockerfile``."""
    here = (start or Path.cwd()).absolute()
    for folder in (here, *here.parents):
        if (folder / "services" / "api" / "Dockerfile").is_file():
            return folder
    raise RuntimeError(f"no services/api/Dockerfile in {here} or above: run from the repo")


def dockerfile(root: Path, service: str) -> Path:
    """``services/<service>/Dockerfile``."""
    return root / "services" / service / "Dockerfile"


def pinned_base_image(root: Path) -> str:
    """The default of ``ARG PYTHON_IMAGE`` (the same in every Dockerfile)."""
    found = {
        match.group(1)
        for service in SERVICES
        for match in _BASE_ARG.finditer(dockerfile(root, service).read_text())
    }
    if len(found) != 1:
        raise RuntimeError(f"the Dockerfiles disagree on ARG PYTHON_IMAGE: {sorted(found)}")
    return found.pop()


# ------------------------------------------------------------------ docker CLI


def docker(
    *args: str, check: bool = True, timeout: float = 120, input_text: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``docker ARGS``, capturing its output; RuntimeError with it when it fails."""
    done = subprocess.run(
        ["docker", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        input=input_text,
        check=False,
    )
    if check and done.returncode != 0:
        raise RuntimeError(
            f"`docker {' '.join(args[:3])} ...` failed ({done.returncode}):\n"
            f"{(done.stdout + done.stderr)[-3000:]}"
        )
    return done


def docker_answers() -> bool:
    """Whether a Docker engine answers the client (``docker info``)."""
    if shutil.which("docker") is None:
        return False
    try:
        return (
            docker("info", "--format", "{{.ServerVersion}}", check=False, timeout=20).returncode
            == 0
        )
    except subprocess.TimeoutExpired:
        return False


def image_exists(ref: str) -> bool:
    """Whether the engine has the image ``ref`` locally."""
    return docker("image", "inspect", ref, check=False).returncode == 0


def image_size(ref: str) -> int:
    """Size of a local image in bytes."""
    return int(docker("image", "inspect", "--format", "{{.Size}}", ref).stdout.strip())


def build_env() -> dict[str, str]:
    """The client's environment for builds: the classic builder when buildx is missing.

    Without buildx, a recent client refuses BuildKit builds; the classic builder (which
    the Dockerfiles are written for as well) then does the build.
    """
    env = dict(os.environ)
    has_buildx = (
        subprocess.run(
            ["docker", "buildx", "version"], capture_output=True, check=False, timeout=20
        ).returncode
        == 0
    )
    if not has_buildx:
        env["DOCKER_BUILDKIT"] = "0"
    return env


# ------------------------------------------------------------------ Debian packages


def ensure_debian_packages(commands: dict[str, str]) -> None:
    """Install the Debian packages whose commands are missing (``{command: package}``).

    Only as root with apt-get; otherwise RuntimeError with the command to run. Services
    of the installed packages are not started (a ``policy-rc.d`` that denies it is put
    in place for the install when the machine has none): dockerd must never start with
    its default flags here.
    """
    missing = sorted({pkg for cmd, pkg in commands.items() if shutil.which(cmd) is None})
    if not missing:
        return
    hint = f"apt-get install -y --no-install-recommends {' '.join(missing)}"
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise RuntimeError(f"missing {', '.join(missing)}; install with: sudo {hint}")
    _say(f"installing {', '.join(missing)} (apt-get)")
    policy = Path("/usr/sbin/policy-rc.d")
    placed = not policy.exists()
    if placed:
        policy.write_text(
            "#!/bin/sh\n# Placed by tasklab_devtools.images for one install.\nexit 101\n"
        )
        policy.chmod(0o755)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    lock = ["-o", "DPkg::Lock::Timeout=600"]
    try:
        for argv in (
            ["apt-get", *lock, "update", "-qq"],
            ["apt-get", *lock, "install", "-y", "-qq", "--no-install-recommends", *missing],
        ):
            done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise RuntimeError(
                    f"`{' '.join(argv)}` failed ({done.returncode}):\n"
                    f"{(done.stdout + done.stderr)[-2000:]}"
                )
    finally:
        if placed:
            policy.unlink(missing_ok=True)


# ------------------------------------------------------------------ host network


def _run_text(argv: list[str]) -> str:
    if shutil.which(argv[0]) is None:
        return f"({argv[0]} not installed)\n"
    done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=30)
    return done.stdout + done.stderr


def network_snapshot() -> str:
    """The host's network configuration, without counters or lifetimes that tick.

    Interfaces and addresses, IPv4/IPv6 routes of every table, iptables rules and the
    forwarding switches: what a Docker engine with default flags would change.
    """
    addresses = re.sub(
        r"\s+(valid_lft|preferred_lft)\s+\S+", "", _run_text(["ip", "-o", "addr", "show"])
    )
    routes = re.sub(
        r"\s+expires\s+\S+", "", _run_text(["ip", "route", "show", "table", "all"])
    ) + re.sub(r"\s+expires\s+\S+", "", _run_text(["ip", "-6", "route", "show", "table", "all"]))
    rules = "\n".join(
        re.sub(r"\[\d+:\d+\]", "", line)
        for line in _run_text(["iptables-save"]).splitlines()
        if not line.startswith("#")
    )
    forwarding = "".join(
        f"{name}={Path('/proc/sys/net', name).read_text().strip()}\n"
        for name in ("ipv4/ip_forward", "ipv6/conf/all/forwarding")
        if Path("/proc/sys/net", name).exists()
    )
    return f"{addresses}\n{routes}\n{rules}\n{forwarding}"


# ------------------------------------------------------------------ engine


def _docker_mounts() -> list[str]:
    """Mount points that a stopped dockerd left under its exec root (``/run/docker``)."""
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        mount_point = line.split()[4]
        if mount_point.startswith(("/run/docker/", "/var/run/docker/")):
            found.append(mount_point)
    return sorted(found, reverse=True)  # innermost first


class DockerEngine:
    """The Docker engine for a run: the one that answers, or one started here.

    A dockerd started here runs with :data:`SAFE_DOCKERD_FLAGS` only, logs to
    ``log_dir/dockerd.log``, and is stopped on exit (containers it still runs are
    stopped by dockerd itself). On exit the host's network must look as it did before
    the start, or RuntimeError. An engine that was already running is left alone.
    """

    def __init__(self, log_dir: Path, start_timeout: float = 90) -> None:
        self.log_dir = log_dir
        self.start_timeout = start_timeout
        self.started_here = False
        self.start_seconds = 0.0
        self._process: ManagedProcess | None = None
        self._network_before = ""

    def __enter__(self) -> Self:
        if docker_answers():
            _say("using the Docker engine that answers")
            return self
        ensure_debian_packages({"dockerd": "docker.io"})
        if shutil.which("docker") is None:
            raise RuntimeError("no docker client on PATH (Debian package docker.io has one)")
        pidfile = Path("/var/run/docker.pid")
        if pidfile.exists() and Path(f"/proc/{pidfile.read_text().strip() or 0}").exists():
            raise RuntimeError(
                f"a dockerd (pid {pidfile.read_text().strip()}) runs but does not answer; "
                "stop it or wait until it answers"
            )
        began = time.monotonic()
        self._network_before = network_snapshot()
        self._process = ManagedProcess(
            "dockerd",
            ["dockerd", *SAFE_DOCKERD_FLAGS],
            dict(os.environ),
            log_path=self.log_dir / "dockerd.log",
        )
        _say(f"starting dockerd {' '.join(SAFE_DOCKERD_FLAGS)}")
        self._process.start()
        self.started_here = True
        deadline = began + self.start_timeout
        while not docker_answers():
            if not self._process.running() or time.monotonic() >= deadline:
                tail = self._process.log_tail()
                self._stop()
                raise RuntimeError(f"dockerd did not come up:\n{tail}")
            time.sleep(0.5)
        self.start_seconds = time.monotonic() - began
        _say(f"dockerd answers after {self.start_seconds:.1f} s")
        return self

    def _stop(self) -> None:
        if self._process is None:
            return
        _say("stopping the dockerd started here")
        # dockerd stops its containers and its containerd on SIGTERM.
        self._process.terminate(timeout=60)
        self._process = None
        # dockerd leaves a bind mount of the host's network namespace behind.
        for mount_point in _docker_mounts():
            subprocess.run(["umount", mount_point], capture_output=True, check=False)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self.started_here:
            return
        self._stop()
        after = network_snapshot()
        if after != self._network_before:
            message = (
                "the host's network changed while dockerd ran:\n--- before\n"
                f"{self._network_before}\n--- after\n{after}"
            )
            if exc is None:
                raise RuntimeError(message)
            _say(message)
        else:
            _say("host network unchanged (addresses, routes, iptables, forwarding)")


# ------------------------------------------------------------------ base image


def make_standin_base(tag: str = STANDIN_IMAGE) -> float:
    """Make a Python base image with debootstrap and import it as ``tag``; seconds taken.

    Debian bookworm (minbase) with python3 and python3-venv, trimmed like a slim
    image, with ``python3``/``python`` also in ``/usr/local/bin`` (as in the official
    image) and the host's CA bundle, so that pip and uv in a build trust whatever the
    host trusts.
    """
    ensure_debian_packages({"debootstrap": "debootstrap"})
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="tasklab-rootfs-", dir="/var/tmp") as tmp:
        rootfs = Path(tmp) / "rootfs"
        _say(f"debootstrap bookworm (minbase + python3) from {DEBIAN_MIRROR}")
        done = subprocess.run(
            [
                "debootstrap",
                "--variant=minbase",
                "--include=python3,python3-venv,ca-certificates",
                "bookworm",
                str(rootfs),
                DEBIAN_MIRROR,
            ],
            capture_output=True,
            text=True,
            check=False,
            timeout=900,
        )
        if done.returncode != 0:
            raise RuntimeError(f"debootstrap failed:\n{(done.stdout + done.stderr)[-3000:]}")
        for folder in (
            "var/cache/apt/archives",
            "var/lib/apt/lists",
            "usr/share/doc",
            "usr/share/man",
            "usr/share/info",
        ):
            for entry in (rootfs / folder).glob("*"):
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                elif entry.name != "lock":
                    entry.unlink()
        local_bin = rootfs / "usr/local/bin"
        local_bin.mkdir(parents=True, exist_ok=True)
        for name in ("python3", "python"):
            (local_bin / name).unlink(missing_ok=True)
            (local_bin / name).symlink_to("/usr/bin/python3")
        if HOST_CA_BUNDLE.is_file():
            shutil.copyfile(HOST_CA_BUNDLE, rootfs / "etc/ssl/certs/ca-certificates.crt")
        tar = subprocess.Popen(
            ["tar", "-C", str(rootfs), "--numeric-owner", "-c", "."], stdout=subprocess.PIPE
        )
        imported = subprocess.run(
            [
                "docker", "import",
                "--change", "ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin",
                "--change", "ENV LANG=C.UTF-8",
                "--change", 'CMD ["python3"]',
                "--change", "LABEL org.opencontainers.image.description="
                "tasklab-local-stand-in-for-python-slim-bookworm",
                "--message", "debootstrap bookworm minbase + python3 (tasklab stand-in)",
                "-", tag,
            ],
            stdin=tar.stdout,
            capture_output=True,
            text=True,
            check=False,
        )  # fmt: skip
        if tar.stdout is not None:
            tar.stdout.close()
        tar.wait()
        if imported.returncode != 0 or tar.returncode != 0:
            raise RuntimeError(f"docker import failed:\n{imported.stdout}{imported.stderr}")
    seconds = time.monotonic() - began
    _say(f"made the stand-in base {tag} in {seconds:.1f} s")
    return seconds


def ensure_base_image(pinned: str, allow_standin: bool) -> str | None:
    """The base image to build on: None for the pinned one (present or pulled), else
    :data:`STANDIN_IMAGE` (made when missing) if ``allow_standin``."""
    if image_exists(pinned):
        return None
    pulled = docker("pull", pinned, check=False, timeout=600)
    if pulled.returncode == 0:
        return None
    if not allow_standin:
        raise RuntimeError(
            f"base image {pinned} is not here and cannot be pulled ({pulled.stderr.strip()}).\n"
            f"Give another base with PYTHON_IMAGE=..., e.g. the stand-in {STANDIN_IMAGE} "
            "that `make verify-images` makes where Docker Hub is out of reach"
        )
    _say(f"{pinned} cannot be pulled here; building on the local stand-in {STANDIN_IMAGE}")
    if not image_exists(STANDIN_IMAGE):
        make_standin_base(STANDIN_IMAGE)
    return STANDIN_IMAGE


# ------------------------------------------------------------------ build


@dataclass
class Built:
    """One image built by :func:`build_images`."""

    service: str
    ref: str
    seconds: float
    size: int


def build_images(
    root: Path,
    tag: str,
    log_dir: Path,
    *,
    repo: str = "tasklab",
    base: str | None = None,
    extra_tags: Sequence[str] = ("dev",),
    network: str = "host",
) -> list[Built]:
    """``docker build`` every service as ``<repo>/<service>:<tag>`` (and extra tags).

    ``base`` overrides the Dockerfiles' ``PYTHON_IMAGE``. Each build's output goes to
    ``log_dir/build-<service>.log``.
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    env = build_env()
    results = []
    for service in SERVICES:
        ref = f"{repo}/{service}:{tag}"
        argv = ["docker", "build", "--network", network, "-f", str(dockerfile(root, service))]
        for extra in (tag, *extra_tags):
            argv += ["-t", f"{repo}/{service}:{extra}"]
        if base is not None:
            argv += ["--build-arg", f"PYTHON_IMAGE={base}"]
        argv += [
            "--label", f"org.opencontainers.image.title=tasklab-{service}",
            "--label", f"org.opencontainers.image.description=tasklab {service} service",
            "--label", f"org.opencontainers.image.version={tag}",
            "--label", f"org.opencontainers.image.base.name={base or pinned_base_image(root)}",
            str(root),
        ]  # fmt: skip
        log_path = log_dir / f"build-{service}.log"
        _say(f"building {ref} (log: {log_path})")
        began = time.monotonic()
        with log_path.open("w") as log:
            done = subprocess.run(
                argv, stdout=log, stderr=subprocess.STDOUT, env=env, check=False, timeout=1800
            )
        seconds = time.monotonic() - began
        if done.returncode != 0:
            tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-40:])
            raise RuntimeError(f"building {ref} failed ({done.returncode}):\n{tail}")
        built = Built(service, ref, seconds, image_size(ref))
        _say(f"built {ref} in {seconds:.1f} s, {built.size / 1e6:.0f} MB")
        results.append(built)
    return results


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
        _say("api image: `migrate` alone ran in a read-only container")

        began = time.monotonic()
        names = {service: run.run(service, env_file) for service in SERVICES}
        base_url = f"http://127.0.0.1:{api_port}"
        with httpx.Client(base_url=base_url, timeout=30) as client:
            _wait_ready(client, run, names["api"], 90)
            timings["api ready"] = time.monotonic() - began
            _say(f"api container ready on {base_url}")
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
    _say(f"api image: the page's {len(assets)} assets, Chart.js among them, are served")


def _check_users(run: ImageRun, names: dict[str, str]) -> None:
    for service, name in names.items():
        info = run.inspect(name)
        user = info["Config"]["User"]
        if not info["HostConfig"]["ReadonlyRootfs"]:
            raise RuntimeError(f"{service}: the root filesystem is not read-only")
        uids = _process_uids(int(info["State"]["Pid"]))
        if uids != {IMAGE_UID}:
            raise RuntimeError(f"{service}: runs with UIDs {sorted(uids)}, expected {IMAGE_UID}")
        _say(f"{service}: image user {user!r}, process UID {IMAGE_UID}, read-only root fs")


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
        _say(f"{method} task #{task['num']} DONE by {worker} ({task['result']})")
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
    _say("celery-worker: `celery -A celery_app inspect registered` lists both tasks")


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
    _say("celery-worker image: `celery beat` sent housekeeping, a worker ran it; exit 0")


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
        _say(f"{service}: exit 0 on SIGTERM after {seconds:.1f} s")


# ------------------------------------------------------------------ commands


@contextlib.contextmanager
def _work_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="tasklab-verify-images-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def verify(
    root: Path, tag: str, repo: str, log_dir: Path, base: str | None = None
) -> dict[str, float]:
    """Engine, base, builds and run checks (see the module's docstring); the timings.

    ``base`` (an image that is present or pullable) replaces the pinned base and its
    stand-in.
    """
    timings: dict[str, float] = {}
    began = time.monotonic()
    with DockerEngine(log_dir) as engine:
        if engine.started_here:
            timings["dockerd start"] = engine.start_seconds
        step = time.monotonic()
        if base is None:
            base = ensure_base_image(pinned_base_image(root), allow_standin=True)
        elif not image_exists(base):
            docker("pull", base, timeout=600)
        timings["base image"] = time.monotonic() - step
        built = build_images(root, tag, log_dir, repo=repo, base=base)
        for image in built:
            timings[f"build {image.service}"] = image.seconds
        with _work_dir() as work:
            run = ImageRun(tag, repo, log_dir, work)
            try:
                check_images(run, timings)
            finally:
                step = time.monotonic()
                run.close()
                timings["clean-up"] = time.monotonic() - step
        sizes = ", ".join(f"{image.ref} {image.size / 1e6:.0f} MB" for image in built)
        step = time.monotonic()
    if engine.started_here:
        timings["dockerd stop"] = time.monotonic() - step
    timings["total"] = time.monotonic() - began
    _say(f"images: {sizes}")
    _say("timings: " + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in timings.items()))
    _say("verify-images: OK")
    return timings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tasklab_devtools.images", description=__doc__.splitlines()[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (("build", "build the three images"), ("verify", "build and run-check them")):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("--tag", required=True, help="image tag, e.g. the short git sha")
        cmd.add_argument("--repo", default="tasklab", help="image name prefix (default tasklab)")
        cmd.add_argument("--log-dir", type=Path, default=Path("artifacts/logs/images"))
        cmd.add_argument(
            "--base", default=None, help="override the Dockerfiles' PYTHON_IMAGE build argument"
        )
    args = parser.parse_args(argv)
    root = repo_root()
    log_dir: Path = args.log_dir if args.log_dir.is_absolute() else root / args.log_dir
    log_dir.mkdir(parents=True, exist_ok=True)
    try:
        if args.command == "build":
            if not docker_answers():
                # (Not the flags make verify-images starts its own engine with: without a
                # bridge and iptables, kind's node containers would have no network.)
                raise RuntimeError(
                    "no Docker engine answers: start Docker (Docker Desktop, or `sudo "
                    "systemctl start docker`) and try again; `docker info` must work"
                )
            if args.base:
                if not image_exists(args.base):
                    docker("pull", args.base, timeout=600)
            else:
                ensure_base_image(pinned_base_image(root), allow_standin=False)
            build_images(root, args.tag, log_dir, repo=args.repo, base=args.base or None)
        else:
            verify(root, args.tag, args.repo, log_dir, base=args.base or None)
    except (RuntimeError, TimeoutError, OSError, subprocess.TimeoutExpired) as exc:
        _say(f"FAILED: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
