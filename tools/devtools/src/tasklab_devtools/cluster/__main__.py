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

from tasklab_devtools.chart import kind_up_args
from tasklab_devtools.cluster.addons import apply_addons, kubectl
from tasklab_devtools.cluster.build import EXTRAS, MODULES, build_all, repo_root
from tasklab_devtools.cluster.config import Layout, default_state
from tasklab_devtools.cluster.extras import apply_keda, apply_metrics_server
from tasklab_devtools.cluster.handle import CLUSTER_NAME
from tasklab_devtools.cluster.images import BROKER_VALUES, addon_images, build_and_save
from tasklab_devtools.cluster.monitoring import apply_monitoring
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


def cmd_build(args: argparse.Namespace) -> int:
    began = time.monotonic()
    extras = tuple(m.name for m in MODULES if m.optional) if args.all else ()
    logs = Path(args.log_dir) if args.log_dir else layout().logs
    for name, path in build_all(logs, extras).items():
        print(f"{name}: {path}")
    _say(f"programs ready in {time.monotonic() - began:.0f} s")
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    lay = layout()
    node = Node(lay)
    began = time.monotonic()
    running = node.running()
    if not running:
        node.reset_state()
    addons = tuple(
        name
        for name, wanted in (
            ("keda", args.keda),
            ("metrics-server", args.metrics_server),
            ("monitoring", args.monitoring),
        )
        if wanted
    )
    bins = build_all(lay.logs, tuple(m for a in addons for m in EXTRAS[a]))
    built = time.monotonic()
    tag = None if args.no_service_images else (args.tag or image_tag())
    with tempfile.TemporaryDirectory(prefix="tasklab-cluster-", dir="/var/tmp") as tmp:
        archive = build_and_save(
            bins,
            tag,
            Path(tmp) / "images.tar",
            lay.logs,
            present=frozenset(node.present_images()) if running else frozenset(),
        )
        imaged = time.monotonic()
        if running:
            # Again on a running cluster, as make kind-up: the rebuilt images go in.
            if archive is not None:
                node.import_image(archive)
        else:
            node.up(kind_port_mappings(), [] if archive is None else [archive])
        if tag is not None:
            node.service_tag = tag
    started = time.monotonic()
    refs = {folder: ref for folder, (ref, _) in addon_images(bins).items()}
    if not running:
        apply_addons(lay, refs)
    if args.keda:
        apply_keda(lay, refs)
    if args.metrics_server:
        apply_metrics_server(lay, refs["metrics-server"])
    if args.monitoring:
        apply_monitoring(lay, refs)
    done = time.monotonic()
    timings = {
        "programs": built - began,
        "images": imaged - built,
        **{k: v for k, v in node.timings.items() if k not in ("build", "up")},
        "add-ons": done - started,
        "total": done - began,
    }
    summary = "up: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items())
    _say(summary)
    with (lay.logs / "up.txt").open("a") as out:
        out.write(summary + "\n")
    ports = node.ports()
    print(
        f"\nThe cluster {CLUSTER_NAME} is up (Kubernetes built from source; one node)"
        + (", with " + " and ".join(addons) if addons else "")
        + f".\n  export KUBECONFIG={lay.kubeconfig}\n"
        f"  apiserver https://127.0.0.1:{ports['api']}; NodePorts on 127.0.0.1: "
        + ", ".join(f"{host}" for host in kind_port_mappings())
        + f"\n  logs: {lay.logs}/   stop: make cluster-down\n"
    )
    return 0


def helm_binary() -> str:
    return str(repo_root() / ".tools" / "bin" / "helm")


def install_args(
    tag: str, extra: list[str], *, keda: bool = False, monitoring: bool = False
) -> list[str]:
    """The chart's helm arguments: make kind-up's (images at ``tag``, and its KEDA and
    MONITORING switches), the broker stand-in, then ``extra``."""
    kind = kind_up_args(
        IMAGE_TAG=tag, KEDA="1" if keda else "0", MONITORING="1" if monitoring else "0"
    )
    return [*kind, *BROKER_VALUES, *extra]


def cmd_install(args: argparse.Namespace) -> int:
    lay = layout()
    namespace = args.namespace
    root = repo_root()
    tag = args.tag or Node(lay).service_tag or image_tag()
    helm_args = install_args(tag, args.extra, keda=args.keda, monitoring=args.monitoring)
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
        *helm_args, "--wait", "--timeout", args.timeout,
        # (as make kind-up with Helm 4: the autoscaler's replicas field goes back to the chart)
        "--force-conflicts",
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
    build = sub.add_parser("build")
    build.add_argument("--all", action="store_true", help="also every add-on's programs")
    build.add_argument("--log-dir", help="where the build logs go (default: the state's logs)")
    build.set_defaults(run=cmd_build)
    up = sub.add_parser("up")
    up.add_argument("--tag", help="tag of the service images (default: scripts/image-tag.sh)")
    up.add_argument(
        "--no-service-images", action="store_true", help="import only the cluster's own"
    )
    up.add_argument("--keda", action="store_true", help="also KEDA, built from source")
    up.add_argument("--metrics-server", action="store_true", help="also metrics-server")
    up.add_argument(
        "--monitoring",
        action="store_true",
        help="also the Prometheus Operator, a Prometheus and kube-state-metrics, built from source",
    )
    up.set_defaults(run=cmd_up)
    install = sub.add_parser("install")
    install.add_argument("--release", default="tasklab")
    install.add_argument("--namespace", default="tasklab")
    install.add_argument("--timeout", default="10m")
    install.add_argument("--tag", help="image tag (default: the one cluster up imported)")
    install.add_argument("--keda", action="store_true", help="workers autoscaled by KEDA (KEDA=1)")
    install.add_argument(
        "--monitoring",
        action="store_true",
        help="the chart's ServiceMonitors and PrometheusRule (MONITORING=1; needs up --monitoring)",
    )
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
