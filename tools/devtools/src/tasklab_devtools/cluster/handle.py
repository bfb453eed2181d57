"""A running test cluster as tests and tools use it: kubectl, helm, the node's network.

:class:`Cluster` is started and stopped with the same command line users have
(``python -m tasklab_devtools.cluster up`` / ``down``: what ``make cluster-up`` runs),
so a test exercises exactly that.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tasklab_devtools.cluster.build import repo_root
from tasklab_devtools.cluster.config import NODE_IP, Layout, default_state
from tasklab_devtools.cluster.netns import in_netns
from tasklab_devtools.cluster.node import Node

__all__ = ["CLUSTER_NAME", "NAMESPACE", "RELEASE", "Cluster"]

#: The cluster's name: its kubeconfig context; the node is <name>-control-plane.
CLUSTER_NAME = "tasklab-local"
#: Where `make kind-up` (and the cluster tier) install tasklab.
NAMESPACE = "tasklab"
RELEASE = "tasklab"
_CLI = [sys.executable, "-m", "tasklab_devtools.cluster"]


@dataclass
class Cluster:
    """The test cluster in ``state`` (default: ``.dev/cluster``)."""

    state: Path

    @classmethod
    def default(cls) -> Cluster:
        return cls(default_state())

    @property
    def layout(self) -> Layout:
        return Layout(CLUSTER_NAME, self.state)

    @property
    def node(self) -> Node:
        return Node(self.layout)

    @property
    def kubeconfig(self) -> Path:
        return self.layout.kubeconfig

    @property
    def env(self) -> dict[str, str]:
        """The environment for kubectl, helm and the kubernetes client: this cluster's
        kubeconfig, and the pinned kubectl and helm first on PATH."""
        tools = repo_root() / ".tools" / "bin"
        return {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "PATH": f"{tools}:{os.environ.get('PATH', '')}",
            "TASKLAB_CLUSTER_DIR": str(self.state),
        }

    # ------------------------------------------------------------------ lifecycle

    def cli(self, *args: str, timeout: float = 3600) -> None:
        """``python -m tasklab_devtools.cluster ARGS``; RuntimeError when it fails."""
        done = subprocess.run([*_CLI, *args], env=self.env, timeout=timeout, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"cluster {' '.join(args)} failed (exit {done.returncode})")

    def up(self) -> None:
        self.cli("up")

    def down(self, keep_logs_in: Path | None = None) -> None:
        """Stop the cluster; first copy its logs to ``keep_logs_in`` when given."""
        if keep_logs_in is not None and self.layout.logs.is_dir():
            shutil.rmtree(keep_logs_in, ignore_errors=True)
            shutil.copytree(self.layout.logs, keep_logs_in, ignore_dangling_symlinks=True)
        self.cli("down", timeout=300)

    # ------------------------------------------------------------------ commands

    def run(
        self, *argv: str, timeout: float = 120, check: bool = True, input_text: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """A command with :attr:`env` (``kubectl ...``, ``helm ...``)."""
        done = subprocess.run(
            list(argv),
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            input=input_text,
        )
        if check and done.returncode != 0:
            raise AssertionError(
                f"`{' '.join(argv)}` failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
            )
        return done

    def kubectl(self, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return self.run("kubectl", *args, **kwargs)

    def helm(self, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return self.run("helm", *args, **kwargs)

    def node_get(self, url: str, timeout: float = 10, **kwargs: Any) -> httpx.Response:
        """An HTTP GET from inside the node's network (e.g. to its address, a NodePort)."""
        holder = self.node.ns.holder_pid
        if holder is None:
            raise RuntimeError("the cluster is not running")
        return in_netns(holder, lambda: httpx.get(url, timeout=timeout, **kwargs))

    @property
    def node_ip(self) -> str:
        return NODE_IP

    def host_port(self, node_port: int) -> int:
        """The host port (127.0.0.1) where a NodePort is published, as kind maps it."""
        return self.node.ports()[str(node_port)]

    def retag_images(self, old_tag: str, new_tag: str, repos: list[str]) -> None:
        """Give images in the node a second tag (a new release of the same build)."""
        node = self.node
        env = node._env(node._bins())
        for repo in repos:
            done = node._ctr(
                env,
                "images",
                "tag",
                "--force",
                f"docker.io/{repo}:{old_tag}",
                f"docker.io/{repo}:{new_tag}",
            )
            if done.returncode != 0:
                raise RuntimeError(f"ctr images tag {repo}: {done.stderr.strip()}")

    @contextlib.contextmanager
    def port_forward(self, target: str, port: int, namespace: str) -> Iterator[str]:
        """``kubectl port-forward TARGET :PORT``; yields ``http://127.0.0.1:<local>``."""
        proc = subprocess.Popen(
            ["kubectl", "-n", namespace, "port-forward", target, f":{port}"],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()  # Forwarding from 127.0.0.1:NNNNN -> PORT
            if "Forwarding from" not in line:
                raise RuntimeError(f"kubectl port-forward {target}: {line}")
            local = line.split("127.0.0.1:")[1].split()[0]
            yield f"http://127.0.0.1:{local}"
        finally:
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)

    def wait_for(self, what: str, check: Any, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: not after {timeout:g} s")
            time.sleep(1)
