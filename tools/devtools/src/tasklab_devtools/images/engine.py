"""The Docker engine for the image builds: its CLI, an engine started where none answers
(with flags that leave the host's network alone, which is checked), and the Debian
packages it needs."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Self

from tasklab_devtools.procs import ManagedProcess

#: The only way dockerd may run on these machines: no bridge, no iptables or forwarding
#: changes. Containers then use ``--network host`` (or ``none``).
SAFE_DOCKERD_FLAGS = ("--bridge=none", "--iptables=false", "--ip-forward=false", "--ip-masq=false")


def say(message: str) -> None:
    """A progress line of the image tooling, on stderr."""
    print(f"[images] {message}", file=sys.stderr, flush=True)


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
    say(f"installing {', '.join(missing)} (apt-get)")
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
            say("using the Docker engine that answers")
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
        say(f"starting dockerd {' '.join(SAFE_DOCKERD_FLAGS)}")
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
        say(f"dockerd answers after {self.start_seconds:.1f} s")
        return self

    def _stop(self) -> None:
        if self._process is None:
            return
        say("stopping the dockerd started here")
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
            say(message)
        else:
            say("host network unchanged (addresses, routes, iptables, forwarding)")
