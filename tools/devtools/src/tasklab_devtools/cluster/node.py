"""Bring the one-node cluster up and down: namespaces, daemons, readiness.

Order, as a kubeadm node starts: the namespaces (:mod:`.netns`) and their mounts;
etcd; kube-apiserver (and the relay that publishes it on the host's loopback);
kube-controller-manager and kube-scheduler; containerd (with the sandbox image
imported); the kubelet; kube-proxy; kube-router's NetworkPolicy controller
(:mod:`.netpol`). Each daemon is started detached, inside the
node, logging to ``<state>/logs/<name>.log``; the cluster outlives the command that
started it and ``down`` stops it (every process of the node's cgroup), so nothing of
it survives, on the host, but the state folder's logs.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from tasklab_devtools.cluster.build import build_all
from tasklab_devtools.cluster.config import API_PORT, CONTAINERD_SOCKET, NODE_IP, Layout
from tasklab_devtools.cluster.netns import KUBELET_SYSCTLS, NodeNamespace, in_netns
from tasklab_devtools.cluster.netpol import network_policy_rbac
from tasklab_devtools.images import ensure_debian_packages
from tasklab_devtools.procs import free_port

__all__ = ["Node"]


def _say(message: str) -> None:
    print(f"[cluster] {message}", file=sys.stderr, flush=True)


def _wait(what: str, check: Callable[[], bool], timeout: float, log: Path | None = None) -> float:
    """Poll ``check`` until it is true; seconds it took, or TimeoutError with the log."""
    began = time.monotonic()
    while True:
        try:
            if check():
                return time.monotonic() - began
        except (OSError, httpx.HTTPError, subprocess.SubprocessError):
            pass
        if time.monotonic() - began > timeout:
            tail = ""
            if log is not None and log.exists():
                tail = "\n" + "\n".join(log.read_text(errors="replace").splitlines()[-40:])
            raise TimeoutError(f"{what}: not ready after {timeout:g} s{tail}")
        time.sleep(0.5)


class Node:
    """The cluster ``layout.name``, its daemons and its state folder."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.ns = NodeNamespace(layout.name, layout.state)
        self.timings: dict[str, float] = {}

    # ------------------------------------------------------------------ state

    def running(self) -> bool:
        return self.ns.holder_pid is not None

    def ports(self) -> dict[str, int]:
        """The host ports of the relay (``api`` and each published NodePort)."""
        try:
            ports: dict[str, int] = json.loads(self.layout.ports_file.read_text())
        except (OSError, ValueError):
            return {}
        return ports

    @property
    def service_tag(self) -> str | None:
        """The tag of the service images imported last (what the chart should run)."""
        try:
            return self.layout.sub("run", "service-tag").read_text().strip() or None
        except OSError:
            return None

    @service_tag.setter
    def service_tag(self, tag: str) -> None:
        self.layout.sub("run", "service-tag").write_text(tag + "\n")

    def _bins(self) -> dict[str, Path]:
        return build_all(self.layout.logs)

    def _env(self, bins: dict[str, Path]) -> dict[str, str]:
        path = ":".join(str(bins[m]) for m in ("kube", "runtime", "runc", "netpol"))
        return {
            "PATH": f"{path}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": str(self.layout.state),
            "LANG": "C.UTF-8",
        }

    # ------------------------------------------------------------------ up

    def up(self, node_ports: dict[int, int], archives: list[Path]) -> None:
        """Start the node; ``node_ports`` maps host ports to the NodePorts published
        there; the image ``archives`` are imported before the kubelet starts."""
        if self.running():
            _say(f"cluster {self.layout.name} is running (state: {self.layout.state})")
            return
        began = time.monotonic()
        # kube-router's NetworkPolicy rules are iptables sets (Debian's ipset).
        ensure_debian_packages({"ipset": "ipset"})
        bins = self._bins()
        self.timings["build"] = time.monotonic() - began
        env = self._env(bins)
        layout = self.layout
        api_port = free_port()
        layout.pki.create(
            layout.node_name,
            sans_ip=[NODE_IP, "10.96.0.1", "127.0.0.1"],
            sans_dns=[layout.node_name, "localhost"],
        )
        layout.write_configs(api_port)
        step = time.monotonic()
        holder = self.ns.create(layout.node_name)
        self._prepare_namespace(bins)
        self._start_relay(holder, api_port, node_ports)
        self.timings["namespaces"] = time.monotonic() - step

        step = time.monotonic()
        self._spawn("etcd", layout.etcd_argv(), env)
        _wait(
            "etcd", lambda: self._node_http("http://127.0.0.1:2379/health"), 60, self._log("etcd")
        )
        self._spawn("kube-apiserver", layout.apiserver_argv(), env)
        _wait("kube-apiserver", self._api_ready, 120, self._log("kube-apiserver"))
        self.timings["control plane"] = time.monotonic() - step
        self._spawn("kube-controller-manager", layout.controller_manager_argv(), env)
        self._spawn("kube-scheduler", layout.scheduler_argv(), env)

        step = time.monotonic()
        self._spawn("containerd", layout.containerd_argv(), env)
        _wait(
            "containerd",
            lambda: self._ctr(env, "version").returncode == 0,
            60,
            self._log("containerd"),
        )
        for archive in archives:
            self.import_image(archive, env)
        self.timings["containerd and images"] = time.monotonic() - step

        step = time.monotonic()
        self._spawn("kubelet", layout.kubelet_argv(), env)
        self._spawn("kube-proxy", layout.proxy_argv(), env)
        _wait("node Ready", self._node_ready, 180, self._log("kubelet"))
        self.timings["kubelet Ready"] = time.monotonic() - step

        step = time.monotonic()
        self._api_apply(network_policy_rbac())
        self._spawn("kube-router", layout.network_policy_argv(), env)
        _wait(
            "kube-router (NetworkPolicies)",
            lambda: self._node_http("http://127.0.0.1:20244/healthz"),
            120,
            self._log("kube-router"),
        )
        self.timings["NetworkPolicy engine"] = time.monotonic() - step
        self.timings["up"] = time.monotonic() - began

    def reset_state(self) -> None:
        """A fresh state folder for a new node (a stopped one's files go)."""
        state = self.layout.state
        if state.exists():
            # A stopped cluster's files (the mounts went with its namespace).
            shutil.rmtree(state)
        state.mkdir(parents=True)
        state.chmod(0o700)
        for sub in (
            "containerd",
            "kubelet",
            "pod-logs",
            "container-logs",
            "cni-conf",
            "cni-state",
            "local-path",
            "etcd",
            "run",
            "logs",
            "sysctl",
        ):
            self.layout.sub(sub).mkdir(exist_ok=True)
        self.layout.sub("etcd").chmod(0o700)

    def _prepare_namespace(self, bins: dict[str, Path]) -> None:
        """Mounts, kernel settings of the namespace, addresses: one script inside."""
        layout = self.layout
        lines = [
            "set -eu",
            # Nothing mounted here reaches the host (unshare made every mount private);
            # inside, mounts are shared, as the kubelet's mount propagation needs.
            "mount --make-rshared /",
            # sysfs of this network namespace; cgroup trees rooted at the node's cgroup.
            "mount -t sysfs sysfs /sys",
            "mount -t tmpfs -o mode=0755,size=1m cgroup /sys/fs/cgroup",
        ]
        for hierarchy in self.ns.cgroups.hierarchies:
            target = f"/sys/fs/cgroup/{hierarchy.mountpoint.name}"
            lines.append(f"mkdir -p {target}")
            if hierarchy.fstype == "cgroup2":
                lines.append(f"mount -t cgroup2 cgroup2 {target}")
            else:
                lines.append(f"mount -t cgroup -o {hierarchy.options} cgroup {target}")
        lines += ["mount -t tmpfs -o mode=0755 tmpfs /run", "mkdir -p /run/containerd"]
        for source, target, read_only in layout.binds(bins):
            lines += [f"mkdir -p {target}", f"mount --bind {shlex.quote(str(source))} {target}"]
            if read_only:
                lines.append(f"mount -o remount,bind,ro {target}")
        for name, value in KUBELET_SYSCTLS.items():
            mask = layout.sub("sysctl", name.replace("/", "."))
            mask.write_text(value + "\n")
            lines += [
                f"mount --bind {mask} /proc/sys/{name}",
                f"mount -o remount,bind,ro /proc/sys/{name}",
            ]
        lines += [
            "ip link set lo up",
            f"ip addr add {NODE_IP}/32 dev lo",
            # Per network namespace: routing between the bridge and the node, and
            # iptables on bridged traffic (kube-proxy's Service rules).
            "echo 1 > /proc/sys/net/ipv4/ip_forward",
            "echo 1 > /proc/sys/net/bridge/bridge-nf-call-iptables",
        ]
        self.ns.run(["sh", "-c", "\n".join(lines)])

    def _start_relay(self, holder: int, api_port: int, node_ports: dict[int, int]) -> None:
        mappings = [f"127.0.0.1:{api_port}={NODE_IP}:{API_PORT}"]
        mappings += [f"127.0.0.1:{host}={NODE_IP}:{node}" for host, node in node_ports.items()]
        log = self._log("forward")
        with log.open("ab") as out:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tasklab_devtools.cluster.forward",
                    "--holder",
                    str(holder),
                    *mappings,
                ],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=self.ns.cgroups.join,
                start_new_session=True,
            )
        _wait("the port relay", lambda: "forward: ready" in log.read_text(), 20, log)
        if proc.poll() is not None:
            raise RuntimeError(f"the port relay exited:\n{log.read_text()}")
        ports = {"api": api_port, **{str(node): host for host, node in node_ports.items()}}
        self.layout.ports_file.write_text(json.dumps(ports))

    def _log(self, name: str) -> Path:
        return self.layout.logs / f"{name}.log"

    def _spawn(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        pid = self.ns.spawn(argv, self._log(name), env)
        self.layout.sub("run", f"{name}.pid").write_text(str(pid))

    def _node_http(self, url: str) -> bool:
        holder = self.ns.holder_pid
        assert holder is not None
        return in_netns(holder, lambda: httpx.get(url, timeout=3).status_code == 200)

    def _api_client(self) -> httpx.Client:
        pki = self.layout.pki
        tls = ssl.create_default_context(cafile=str(pki.ca))
        tls.load_cert_chain(str(pki.path("admin")), str(pki.path("admin", "key")))
        return httpx.Client(
            base_url=f"https://127.0.0.1:{self.ports()['api']}", verify=tls, timeout=5
        )

    def _api_apply(self, objects: list[dict[str, Any]]) -> None:
        """Create or update cluster-scoped objects (server-side apply) as the admin."""
        with self._api_client() as client:
            for obj in objects:
                group, _, version = obj["apiVersion"].rpartition("/")
                plural = obj["kind"].lower() + "s"
                base = f"/apis/{group}/{version}" if group else f"/api/{version}"
                answer = client.patch(
                    f"{base}/{plural}/{obj['metadata']['name']}",
                    params={"fieldManager": "tasklab-cluster", "force": "true"},
                    content=json.dumps(obj),
                    headers={"Content-Type": "application/apply-patch+yaml"},
                )
                if answer.status_code >= 300:
                    raise RuntimeError(f"apply {obj['kind']}: {answer.status_code} {answer.text}")

    def _api_ready(self) -> bool:
        with self._api_client() as client:
            return client.get("/readyz").status_code == 200

    def _node_ready(self) -> bool:
        with self._api_client() as client:
            answer = client.get(f"/api/v1/nodes/{self.layout.node_name}")
            if answer.status_code != 200:
                return False
            conditions = answer.json().get("status", {}).get("conditions", [])
            return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    def _ctr(self, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
        argv = [
            "env",
            f"PATH={env['PATH']}",
            "ctr",
            "--address",
            CONTAINERD_SOCKET,
            "--namespace",
            "k8s.io",
            *args,
        ]
        return self.ns.run(argv, timeout=300, check=False)

    def present_images(self) -> set[str]:
        """References of the images the node's containerd holds (docker.io/ dropped)."""
        done = self._ctr(self._env(self._bins()), "images", "ls", "-q")
        if done.returncode != 0:
            raise RuntimeError(f"ctr images ls: {done.stderr.strip()}")
        return {ref.removeprefix("docker.io/") for ref in done.stdout.split()}

    def import_image(self, archive: Path, env: dict[str, str] | None = None) -> None:
        """Import an image archive (``docker save`` or OCI layout tar) into containerd."""
        done = self._ctr(env or self._env(self._bins()), "images", "import", str(archive))
        if done.returncode != 0:
            raise RuntimeError(f"ctr images import {archive.name}: {done.stderr.strip()}")

    # ------------------------------------------------------------------ down

    def down(self) -> None:
        """Stop every process of the node; remove its state but the logs."""
        if self.ns.holder_pid is None and not self.ns.cgroups.pids():
            _say(f"cluster {self.layout.name} is not running")
        self.ns.kill_all()
        state = self.layout.state
        if state.exists():
            for child in state.iterdir():
                if child.name != "logs":
                    if child.is_dir() and not child.is_symlink():
                        shutil.rmtree(child, ignore_errors=True)
                    else:
                        child.unlink(missing_ok=True)
        os.sync()
