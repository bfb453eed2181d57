"""``python -m tasklab_devtools.cluster``: the test cluster's command line.

    up [--tag TAG]     build (cached), start the node, import the images, DNS, storage
    install [ARGS]     tasklab's chart with make kind-up's helm arguments (+ ARGS)
    down               stop everything; keep the logs
    status             what runs, and where
    build              only build the programs (cached by version)

``make cluster-up`` / ``make cluster-down`` call these. ``KUBECONFIG`` for the cluster:
``.dev/cluster/kubeconfig`` (``TASKLAB_CLUSTER_DIR`` moves the state folder).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from tasklab_devtools.cluster.addons import apply_addons, kubectl
from tasklab_devtools.cluster.build import build_all, repo_root
from tasklab_devtools.cluster.config import Layout, default_state
from tasklab_devtools.cluster.handle import CLUSTER_NAME
from tasklab_devtools.cluster.images import BROKER_VALUES, addon_images, build_and_save
from tasklab_devtools.cluster.node import Node


def _say(message: str) -> None:
    print(f"[cluster] {message}", file=sys.stderr, flush=True)


def kind_port_mappings() -> dict[int, int]:
    """``{host port: node port}`` of deploy/kind/cluster.yaml's extraPortMappings."""
    config = yaml.safe_load((repo_root() / "deploy" / "kind" / "cluster.yaml").read_text())
    found = {}
    for node in config.get("nodes", []):
        for mapping in node.get("extraPortMappings", []):
            found[int(mapping["hostPort"])] = int(mapping["containerPort"])
    return found


def image_tag() -> str:
    root = repo_root()
    return subprocess.run(
        [str(root / "scripts" / "image-tag.sh")],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def layout() -> Layout:
    return Layout(CLUSTER_NAME, default_state())


def cmd_build(_: argparse.Namespace) -> int:
    began = time.monotonic()
    for name, path in build_all(layout().logs).items():
        print(f"{name}: {path}")
    _say(f"programs ready in {time.monotonic() - began:.0f} s")
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    lay = layout()
    node = Node(lay)
    began = time.monotonic()
    if not node.running():
        node.reset_state()
    bins = build_all(lay.logs)
    built = time.monotonic()
    tag = None if args.no_service_images else (args.tag or image_tag())
    with tempfile.TemporaryDirectory(prefix="tasklab-cluster-", dir="/var/tmp") as tmp:
        archive = build_and_save(bins, tag, Path(tmp) / "images.tar", lay.logs)
        imaged = time.monotonic()
        if node.running():
            # Again on a running cluster, as make kind-up: the rebuilt images go in.
            node.import_image(archive)
            if tag is not None:
                node.service_tag = tag
            _say(f"running; images (re)imported, service images {tag}; KUBECONFIG={lay.kubeconfig}")
            return 0
        node.up(kind_port_mappings(), [archive])
        if tag is not None:
            node.service_tag = tag
    started = time.monotonic()
    refs = {folder: ref for folder, (ref, _) in addon_images(bins).items()}
    apply_addons(lay, refs)
    done = time.monotonic()
    timings = {
        "programs": built - began,
        "images": imaged - built,
        **{k: v for k, v in node.timings.items() if k not in ("build", "up")},
        "dns and storage": done - started,
        "total": done - began,
    }
    summary = "up: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items())
    _say(summary)
    (lay.logs / "up.txt").write_text(summary + "\n")
    ports = node.ports()
    print(
        f"\nThe cluster {CLUSTER_NAME} is up (Kubernetes built from source; one node).\n"
        f"  export KUBECONFIG={lay.kubeconfig}\n"
        f"  apiserver https://127.0.0.1:{ports['api']}; NodePorts on 127.0.0.1: "
        + ", ".join(f"{host}" for host in kind_port_mappings())
        + f"\n  logs: {lay.logs}/   stop: make cluster-down\n"
    )
    return 0


def helm_binary() -> str:
    return str(repo_root() / ".tools" / "bin" / "helm")


def install_args(tag: str, extra: list[str]) -> list[str]:
    """The chart's helm arguments: make kind-up's (images at ``tag``; no
    kube-prometheus-stack, whose chart cannot be fetched here), the broker stand-in,
    then ``extra``."""
    root = repo_root()
    kind_args = subprocess.run(
        [str(root / "scripts" / "kind-up.sh"), "--print-helm-args"],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": "/usr/bin:/bin", "IMAGE_TAG": tag, "MONITORING": "0"},
    ).stdout.splitlines()
    return [*kind_args, *BROKER_VALUES, *extra]


def cmd_install(args: argparse.Namespace) -> int:
    lay = layout()
    namespace = args.namespace
    root = repo_root()
    tag = args.tag or Node(lay).service_tag or image_tag()
    created = kubectl(lay, "create", "namespace", namespace, "--dry-run=client", "-o", "yaml")
    kubectl(lay, "apply", "-f", "-", input_text=created.stdout)
    kubectl(
        lay,
        "label",
        "namespace",
        namespace,
        "--overwrite",
        "pod-security.kubernetes.io/enforce=restricted",
        "pod-security.kubernetes.io/warn=restricted",
    )
    argv = [
        helm_binary(), "--kubeconfig", str(lay.kubeconfig), "upgrade", "--install", args.release,
        str(root / "deploy" / "helm" / "tasklab"), "--namespace", namespace,
        *install_args(tag, args.extra), "--wait", "--timeout", args.timeout,
    ]  # fmt: skip
    began = time.monotonic()
    done = subprocess.run(argv, check=False)
    _say(f"helm upgrade --install: exit {done.returncode} after {time.monotonic() - began:.0f} s")
    return done.returncode


def cmd_down(_: argparse.Namespace) -> int:
    Node(layout()).down()
    _say("down")
    return 0


def cmd_status(_: argparse.Namespace) -> int:
    lay = layout()
    node = Node(lay)
    if not node.running():
        print(f"{CLUSTER_NAME}: not running")
        return 1
    print(f"{CLUSTER_NAME}: running; KUBECONFIG={lay.kubeconfig}; ports {node.ports()}")
    print(kubectl(lay, "get", "nodes,pods", "-A", "-o", "wide").stdout)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tasklab_devtools.cluster",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("build").set_defaults(run=cmd_build)
    up = sub.add_parser("up")
    up.add_argument("--tag", help="tag of the service images (default: scripts/image-tag.sh)")
    up.add_argument(
        "--no-service-images", action="store_true", help="import only the cluster's own"
    )
    up.set_defaults(run=cmd_up)
    install = sub.add_parser("install")
    install.add_argument("--release", default="tasklab")
    install.add_argument("--namespace", default="tasklab")
    install.add_argument("--timeout", default="10m")
    install.add_argument("--tag", help="image tag (default: the one cluster up imported)")
    install.add_argument("extra", nargs="*", help="more helm arguments (after --)")
    install.set_defaults(run=cmd_install)
    sub.add_parser("down").set_defaults(run=cmd_down)
    sub.add_parser("status").set_defaults(run=cmd_status)
    args = parser.parse_args(argv)
    try:
        code: int = args.run(args)
    except (RuntimeError, TimeoutError) as exc:
        print(f"cluster: {exc}", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
