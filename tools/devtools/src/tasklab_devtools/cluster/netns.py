"""The node's namespaces: its own network, mounts, cgroups and host name.

One *holder* process (``unshare --net --mount --cgroup --uts sleep infinity``) keeps
the namespaces alive; every daemon of the node enters them with ``nsenter`` (kubelet
and containerd must share one mount namespace, and see the same cgroup tree). Before
it enters, each process joins the node's own cgroup in every hierarchy (a child of the
cgroup we run in), so the cgroup namespace's root is that cgroup, the kubelet's pods
land under it, and :meth:`NodeNamespace.kill_all` finds every process of the node.

What the host keeps: its interfaces, routes, iptables rules, resolver, kernel settings
and mounts. The network namespace has no link out of it and no default route; mounts
made inside (sysfs, cgroup trees, the kubelet's and containerd's volumes) vanish with
the namespace. The kubelet checks six kernel settings (``vm.overcommit_memory`` ...)
and, left alone, would set them for the whole machine: inside the mount namespace
each is a read-only file holding the value the kubelet expects
(``protectKernelDefaults: true``), so it verifies and writes nothing. What this
machine refuses (writing ``nf_conntrack_max``, lowering ``oom_score_adj``) is turned
off in the components' configuration instead.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

__all__ = ["KUBELET_SYSCTLS", "Cgroups", "NodeNamespace", "enter_netns", "in_netns"]

T = TypeVar("T")
_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)

#: The values the kubelet requires (k8s.io/component-helpers/node/util/sysctl).
KUBELET_SYSCTLS = {
    "vm/overcommit_memory": "1",
    "vm/panic_on_oom": "0",
    "kernel/panic": "10",
    "kernel/panic_on_oops": "1",
    "kernel/keys/root_maxkeys": "1000000",
    "kernel/keys/root_maxbytes": "25000000",
}


@dataclass(frozen=True)
class Hierarchy:
    """One mounted cgroup hierarchy: where, its mount options, our path in it."""

    mountpoint: Path
    fstype: str  # cgroup or cgroup2
    options: str  # e.g. "cpu" or "name=systemd"
    own_path: str  # the cgroup this process is in, e.g. /process_api/x


def _hierarchies() -> list[Hierarchy]:
    """The cgroup hierarchies of this machine, and the cgroup we are in in each."""
    subsystems = {
        line.split()[0]
        for line in Path("/proc/cgroups").read_text().splitlines()
        if line and not line.startswith("#")
    }
    own: dict[frozenset[str], str] = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        own[frozenset(controllers.split(",")) if controllers else frozenset()] = path
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        fstype, _, super_opts = right.split(" ", 2)
        mountpoint = Path(left.split(" ")[4])
        if fstype == "cgroup2":
            found.append(Hierarchy(mountpoint, fstype, "", own.get(frozenset(), "/")))
        elif fstype == "cgroup":
            opts = [
                o
                for o in super_opts.split(" ")[-1].split(",")
                if o in subsystems or o.startswith("name=")
            ]
            path = own.get(frozenset(opts), "/")
            found.append(Hierarchy(mountpoint, fstype, ",".join(opts), path))
    return found


class Cgroups:
    """The node's cgroup ``name`` under our own cgroup, in every hierarchy."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.hierarchies = _hierarchies()
        if not self.hierarchies:
            raise RuntimeError("no cgroup hierarchy is mounted on this machine")

    def dirs(self) -> list[Path]:
        return [h.mountpoint / h.own_path.lstrip("/") / self.name for h in self.hierarchies]

    def create(self) -> None:
        for hierarchy, folder in zip(self.hierarchies, self.dirs(), strict=True):
            folder.mkdir(exist_ok=True)
            if "cpuset" in hierarchy.options.split(","):
                # A new cpuset cgroup has no CPUs or memory nodes until given its parent's.
                for item in ("cpuset.cpus", "cpuset.mems"):
                    (folder / item).write_text((folder.parent / item).read_text())

    def join(self) -> None:
        """Move the calling process into the node's cgroups (used before exec)."""
        for folder in self.dirs():
            (folder / "cgroup.procs").write_text("0")

    def pids(self) -> set[int]:
        """Every process in the node's cgroups, at any depth."""
        found: set[int] = set()
        for folder in self.dirs():
            if not folder.is_dir():
                continue
            for procs in folder.rglob("cgroup.procs"):
                with contextlib.suppress(OSError):
                    found.update(int(p) for p in procs.read_text().split())
        return found

    def remove(self) -> None:
        """Remove the (empty) cgroup trees, deepest first."""
        for folder in self.dirs():
            if not folder.is_dir():
                continue
            for sub in sorted(
                (p for p in folder.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)
            ):
                with contextlib.suppress(OSError):
                    sub.rmdir()
            with contextlib.suppress(OSError):
                folder.rmdir()


class NodeNamespace:
    """The holder of the node's namespaces, and how processes enter them."""

    def __init__(self, name: str, state: Path) -> None:
        self.cgroups = Cgroups(f"tasklab-cluster-{name}")
        self.pid_file = state / "run" / "holder.pid"

    @property
    def holder_pid(self) -> int | None:
        """Pid of a live holder, None if there is none."""
        try:
            pid = int(self.pid_file.read_text())
        except (OSError, ValueError):
            return None
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return None
        return pid if b"sleep" in cmdline and self._in_own_netns(pid) else None

    @staticmethod
    def _in_own_netns(pid: int) -> bool:
        return os.readlink(f"/proc/{pid}/ns/net") != os.readlink("/proc/self/ns/net")

    def create(self, hostname: str) -> int:
        """Start the holder (its namespaces are new and empty); return its pid."""
        self.cgroups.create()
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        holder = subprocess.Popen(
            [
                "unshare",
                "--net",
                "--mount",
                "--cgroup",
                "--uts",
                "--propagation",
                "unchanged",
                "sleep",
                "infinity",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=self.cgroups.join,
            start_new_session=True,
        )
        deadline = time.monotonic() + 10
        while not self._in_own_netns(holder.pid):
            if holder.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"unshare failed (exit {holder.poll()})")
            time.sleep(0.05)
        self.pid_file.write_text(str(holder.pid))
        self.run(["hostname", hostname])
        return holder.pid

    def enter_argv(self, argv: list[str]) -> list[str]:
        """``argv`` run inside every namespace of the node."""
        pid = self.holder_pid
        if pid is None:
            raise RuntimeError("the node is not running (no namespace holder)")
        return ["nsenter", "-t", str(pid), "-n", "-m", "-C", "-u", "--", *argv]

    def run(
        self, argv: list[str], *, timeout: float = 60, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run a command inside the node and wait for it."""
        done = subprocess.run(
            self.enter_argv(argv),
            capture_output=True,
            text=True,
            timeout=timeout,
            preexec_fn=self.cgroups.join,
            check=False,
        )
        if check and done.returncode != 0:
            raise RuntimeError(
                f"in the node: `{' '.join(argv)}` failed ({done.returncode}): {done.stderr.strip()}"
            )
        return done

    def spawn(self, argv: list[str], log: Path, env: dict[str, str]) -> int:
        """Start a daemon inside the node, detached (it outlives us); return its pid."""
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as out:
            proc = subprocess.Popen(
                self.enter_argv(argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                preexec_fn=self.cgroups.join,
                start_new_session=True,
            )
        return proc.pid

    def kill_all(self, timeout: float = 20) -> None:
        """SIGTERM, then SIGKILL, every process of the node; remove its cgroups."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in self.cgroups.pids():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + (timeout if sig == signal.SIGTERM else 10)
            while self.cgroups.pids() and time.monotonic() < deadline:
                time.sleep(0.2)
        self.cgroups.remove()
        self.pid_file.unlink(missing_ok=True)


def enter_netns(holder_pid: int) -> None:
    """Move the calling thread into the node's network namespace."""
    fd = os.open(f"/proc/{holder_pid}/ns/net", os.O_RDONLY)
    try:
        if _libc.setns(fd, _CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "setns into the node's network namespace")
    finally:
        os.close(fd)


def in_netns(holder_pid: int, call: Callable[[], T]) -> T:
    """Run ``call`` in a thread that is in the node's network namespace.

    Sockets it opens belong to the node's network (a thread's network namespace is its
    own); the calling thread stays where it is.
    """
    result: list[T] = []
    error: list[BaseException] = []

    def run() -> None:
        try:
            enter_netns(holder_pid)
            result.append(call())
        except BaseException as exc:
            error.append(exc)

    thread = threading.Thread(target=run, name="in-node-netns", daemon=True)
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]
