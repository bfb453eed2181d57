"""Build the test cluster's programs from the Go module proxy, cached by version.

Small Go modules under ``tools/cluster/`` pin every version (``go.mod`` and
``go.sum`` are committed); each is built with the machine's Go (``GOTOOLCHAIN=local``):

``kube``
    one binary, ``tasklab-kube``, holding etcd, kube-apiserver,
    kube-controller-manager, kube-scheduler, kubelet and kube-proxy (our ``main.go``
    calls each program's own command), linked once instead of six times;
``runtime``
    containerd, its runc shim and ``ctr``, and the CNI plugins bridge, host-local,
    loopback and portmap;
``runc``
    runc, with seccomp (cgo and Debian's libseccomp; the pods' ``RuntimeDefault``
    profile needs it), in a module of its own because it needs an older
    runtime-spec than containerd;
``netpol``
    kube-router (2.1.0, the only version the module proxy serves), run as the node's
    NetworkPolicy engine only (its firewall; no routing, no Service proxy);
``addons``
    what runs in pods: CoreDNS (its Kubernetes plugin set), the local-path
    provisioner and the sandbox (``pause``) program, all static;
``keda``, ``metrics-server``
    built only for ``cluster up --keda`` / ``--metrics-server``: KEDA's operator and
    metrics apiserver (2.17.3: 2.18's scaler dependencies are not all served by the
    module proxy), and metrics-server 0.8.0 (for the HPA on CPU);
``prometheus``, ``prometheus-operator``, ``kube-state-metrics``
    built only for ``cluster up --monitoring``: Prometheus (Kubernetes discovery only),
    the Prometheus Operator with its config reloader, and kube-state-metrics, each in a
    module of its own (their Kubernetes libraries' versions do not agree).

The output of a module goes to ``~/.cache/tasklab/cluster/<module>-<key>/`` (or
``$TASKLAB_CLUSTER_CACHE``), where the key hashes the module's files, the Go version
and the build flags: a warm start finds it and builds nothing; a changed pin builds
again beside the old one. The Go build cache (``go env GOCACHE``) is what makes a
rebuild after a small change quick.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "EXTRAS",
    "MODULES",
    "GoModule",
    "build_all",
    "cache_root",
    "module_source",
    "module_version",
]


def _say(message: str) -> None:
    print(f"[cluster] {message}", file=sys.stderr, flush=True)


def repo_root() -> Path:
    here = Path(__file__).resolve()
    for folder in here.parents:
        if (folder / "tools" / "cluster" / "kube" / "go.mod").is_file():
            return folder
    raise RuntimeError(f"no tools/cluster/kube/go.mod above {here}")


def cache_root() -> Path:
    """Where built programs are kept, outside the checkout."""
    configured = os.environ.get("TASKLAB_CLUSTER_CACHE")
    if configured:
        return Path(configured)
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "tasklab" / "cluster"


def module_version(module_dir: Path, path: str) -> str:
    """The version ``module_dir/go.mod`` requires of module ``path``."""
    text = (module_dir / "go.mod").read_text()
    match = re.search(rf"^\s*(?:require\s+)?{re.escape(path)}\s+(v\S+)", text, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"{module_dir}/go.mod does not require {path}")
    return match.group(1)


def module_source(where: str, path: str) -> Path:
    """The folder of module ``path`` (as ``tools/cluster/<where>/go.mod`` pins it) in the
    Go module cache: its manifests are read from there."""
    done = subprocess.run(
        ["go", "list", "-m", "-json", path],
        cwd=repo_root() / "tools" / "cluster" / where,
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "GOTOOLCHAIN": "local"},
    )
    return Path(json.loads(done.stdout)["Dir"])


@dataclass(frozen=True)
class GoModule:
    """One of the Go modules under tools/cluster/ and how it is built."""

    name: str
    packages: tuple[str, ...]
    cgo: bool = False
    tags: tuple[str, ...] = ()
    #: -X flags, each ``importpath.name=value``; ``{module}`` is filled with the version
    #: go.mod requires of that module, ``{module:major}`` and ``{module:minor}`` with parts.
    version_vars: tuple[str, ...] = ()
    #: Programs the output folder must hold after the build.
    outputs: tuple[str, ...] = ()
    #: Names linked to the first output (a multi-call binary's programs).
    links: tuple[str, ...] = field(default=())
    #: Built only when asked for (an add-on of ``cluster up``: KEDA, metrics-server).
    optional: bool = False

    def source_dir(self, root: Path) -> Path:
        return root / "tools" / "cluster" / self.name

    def ldflags(self, root: Path) -> str:
        def fill(match: re.Match[str]) -> str:
            version = module_version(self.source_dir(root), match.group(1))
            part = match.group(2)
            if part is None:
                return version
            major, minor = version.lstrip("v").split(".")[:2]
            return major if part == "major" else minor

        flags = ["-s", "-w"]
        for var in self.version_vars:
            flags += ["-X", re.sub(r"\{([^}:]+)(?::(major|minor))?\}", fill, var)]
        return " ".join(flags)

    def key(self, root: Path, go_version: str) -> str:
        digest = hashlib.sha256()
        src = self.source_dir(root)
        for path in sorted(p for p in src.rglob("*") if p.is_file()):
            digest.update(str(path.relative_to(src)).encode() + b"\0" + path.read_bytes() + b"\0")
        digest.update(
            repr((go_version, self.packages, self.cgo, self.tags, self.ldflags(root))).encode()
        )
        return digest.hexdigest()[:16]


def _kube_version_vars() -> tuple[str, ...]:
    out = []
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        out += [
            f"{pkg}.gitVersion={{k8s.io/kubernetes}}",
            f"{pkg}.gitMajor={{k8s.io/kubernetes:major}}",
            f"{pkg}.gitMinor={{k8s.io/kubernetes:minor}}",
            f"{pkg}.gitTreeState=clean",
            f"{pkg}.buildDate=1970-01-01T00:00:00Z",
        ]
    return tuple(out)


KUBE_PROGRAMS = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubelet",
    "kube-proxy",
)

MODULES = (
    GoModule(
        "kube",
        packages=(".",),
        version_vars=_kube_version_vars(),
        outputs=("tasklab-kube",),
        links=KUBE_PROGRAMS,
    ),
    GoModule(
        "runtime",
        packages=("tool",),
        tags=("no_btrfs", "no_devmapper", "no_zfs"),
        version_vars=(
            "github.com/containerd/containerd/v2/version.Version={github.com/containerd/containerd/v2}",
        ),
        outputs=(
            "containerd",
            "containerd-shim-runc-v2",
            "ctr",
            "bridge",
            "host-local",
            "loopback",
            "portmap",
        ),
    ),
    GoModule(
        "runc",
        packages=("tool",),
        cgo=True,
        tags=("seccomp",),
        version_vars=("main.version={github.com/opencontainers/runc}",),
        outputs=("runc",),
    ),
    GoModule(
        "netpol",
        packages=("tool",),
        version_vars=(
            "github.com/cloudnativelabs/kube-router/v2/pkg/version.Version={github.com/cloudnativelabs/kube-router/v2}",
        ),
        outputs=("kube-router",),
    ),
    GoModule(
        "addons",
        packages=("./cmd/...", "tool"),
        outputs=("coredns", "local-path-provisioner", "pause"),
    ),
    GoModule(
        "keda",
        packages=("tool",),
        version_vars=("github.com/kedacore/keda/v2/version.Version={github.com/kedacore/keda/v2}",),
        outputs=("operator", "adapter"),
        optional=True,
    ),
    GoModule(
        "metrics-server",
        packages=("tool",),
        outputs=("metrics-server",),
        optional=True,
    ),
    GoModule(
        "prometheus",
        packages=("tool",),
        # Kubernetes service discovery only (the other providers' SDKs stay out).
        tags=("remove_all_sd", "enable_kubernetes_sd"),
        outputs=("prometheus",),
        optional=True,
    ),
    GoModule(
        "prometheus-operator",
        packages=("tool",),
        version_vars=(
            "github.com/prometheus/common/version.Version={github.com/prometheus-operator/prometheus-operator}",
        ),
        outputs=("operator", "prometheus-config-reloader"),
        optional=True,
    ),
    GoModule(
        "kube-state-metrics",
        packages=("tool",),
        version_vars=(
            "github.com/prometheus/common/version.Version={k8s.io/kube-state-metrics/v2}",
        ),
        outputs=("kube-state-metrics",),
        optional=True,
    ),
)

#: The modules each add-on of ``cluster up`` needs besides the node's.
EXTRAS = {
    "keda": ("keda",),
    "metrics-server": ("metrics-server",),
    "monitoring": ("prometheus", "prometheus-operator", "kube-state-metrics"),
}


def _go_version() -> str:
    if shutil.which("go") is None:
        raise RuntimeError(
            "the test cluster is built with Go (1.24 or later), which is not on PATH; "
            "install it from https://go.dev/dl/ (Debian 12's golang is too old)"
        )
    return subprocess.run(
        ["go", "env", "GOVERSION"], capture_output=True, text=True, check=True
    ).stdout.strip()


def _build_one(module: GoModule, root: Path, target: Path, log: Path) -> None:
    work = target.with_name(target.name + ".partial")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    env = dict(os.environ, GOTOOLCHAIN="local", CGO_ENABLED="1" if module.cgo else "0")
    argv = ["go", "build", "-trimpath", "-ldflags", module.ldflags(root), "-o", str(work) + "/"]
    if module.tags:
        argv += ["-tags", ",".join(module.tags)]
    argv += list(module.packages)
    with log.open("w") as out:
        done = subprocess.run(
            argv, cwd=module.source_dir(root), env=env, stdout=out, stderr=subprocess.STDOUT
        )
    if done.returncode != 0:
        raise RuntimeError(
            f"go build of tools/cluster/{module.name} failed:\n{log.read_text()[-4000:]}"
        )
    if module.name == "kube":
        (work / "kube").rename(work / "tasklab-kube")
    missing = [name for name in module.outputs if not (work / name).is_file()]
    if missing:
        raise RuntimeError(f"tools/cluster/{module.name}: the build made no {missing}")
    for name in module.links:
        (work / name).symlink_to(module.outputs[0])
    shutil.rmtree(target, ignore_errors=True)
    work.rename(target)


def build_all(log_dir: Path, extras: tuple[str, ...] = ()) -> dict[str, Path]:
    """Build (or find in the cache) every module but the optional ones not in
    ``extras``; ``{module name: its bin folder}``.

    One build of a module at a time per cache (a lock file per module): a second
    caller, e.g. the cluster tier while ``make test``'s early background build still
    runs, waits for the module being built and then finds it; so the tier can start
    its node once the modules it needs first are built, while the background build
    goes on with the optional ones (KEDA, metrics-server, Prometheus)."""
    root = repo_root()
    go_version = _go_version()
    log_dir.mkdir(parents=True, exist_ok=True)
    cache_root().mkdir(parents=True, exist_ok=True)
    found = {}
    for module in MODULES:
        if module.optional and module.name not in extras:
            continue
        target = cache_root() / f"{module.name}-{module.key(root, go_version)}"
        with (cache_root() / f".lock-{module.name}").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not (target / module.outputs[0]).is_file():
                log = log_dir / f"build-{module.name}.log"
                _say(f"building tools/cluster/{module.name} with {go_version} (log: {log})")
                started = time.monotonic()
                _build_one(module, root, target, log)
                _say(f"built tools/cluster/{module.name} in {time.monotonic() - started:.0f} s")
        found[module.name] = target
    return found
