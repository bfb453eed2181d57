"""The kind cluster config and the make kind-up scripting, checked without a cluster.

scripts/kind-up.sh runs here against stand-ins for docker, kind, kubectl, helm and
make that record their arguments: the test checks what it would do, in which order,
that a second run is idempotent, and that the chart values it installs are exactly the
kind value sets the other tests render and validate.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml  # type: ignore[import-untyped,unused-ignore]

from tasklab_devtools import chart
from tasklab_devtools.chart import REPO_ROOT, TOOLS_DIR, Obj

KIND_DIR = REPO_ROOT / "deploy" / "kind"
SCRIPTS = [
    REPO_ROOT / "scripts" / n
    for n in ("kind-up.sh", "k8s-tools.sh", "port-forward.sh", "image-tag.sh")
]


def test_scripts_pass_shellcheck(tools: None) -> None:
    done = subprocess.run(
        [str(TOOLS_DIR / "checkov" / "bin" / "shellcheck"), *map(str, SCRIPTS)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def _node_ports(docs: list[Obj]) -> set[int]:
    return {
        p["nodePort"]
        for s in chart.find(docs, "Service")
        if s["spec"].get("type") == "NodePort"
        for p in s["spec"]["ports"]
        if "nodePort" in p
    }


def test_cluster_config(rendered: dict[str, list[Obj]]) -> None:
    text = (KIND_DIR / "cluster.yaml").read_text()
    config = yaml.safe_load(text)
    assert (config["kind"], config["apiVersion"]) == ("Cluster", "kind.x-k8s.io/v1alpha4")
    (node,) = config["nodes"]
    # Pinned by digest, to a Kubernetes version the manifests are validated against.
    match = re.fullmatch(r"kindest/node:v(\d+\.\d+)\.\d+@sha256:[0-9a-f]{64}", node["image"])
    assert match, node["image"]
    assert f"{match.group(1)}.0" in ("1.34.0",)
    mappings = node["extraPortMappings"]
    for m in mappings:
        assert m["listenAddress"] == "127.0.0.1"
        assert m["hostPort"] == m["containerPort"]
        # Each mapping is explained by a comment right above it.
        line = next(
            i
            for i, t in enumerate(text.splitlines())
            if f"containerPort: {m['containerPort']}" in t
        )
        assert text.splitlines()[line - 1].strip().startswith("#")
    mapped = {m["containerPort"] for m in mappings}
    kps = yaml.safe_load((KIND_DIR / "kube-prometheus-stack-values.yaml").read_text())
    monitoring_ports = {
        kps["grafana"]["service"]["nodePort"],
        kps["prometheus"]["service"]["nodePort"],
    }
    assert mapped == _node_ports(rendered["kind-up"]) | monitoring_ports
    # No default password anywhere: Grafana's admin comes from a Secret kind-up creates.
    assert "adminPassword" not in yaml.safe_dump(kps)
    assert kps["grafana"]["admin"]["existingSecret"] == "grafana-admin"


STUB = """#!/usr/bin/env bash
echo "$(basename "$0") $*" >> "$STUB_LOG"
case "$(basename "$0") $1 $2" in
  "kind get clusters") cat "$STUB_STATE/clusters" 2>/dev/null; exit 0 ;;
  "kind create cluster") echo tasklab >> "$STUB_STATE/clusters" ;;
  "kubectl --context kind-tasklab")
    case "$*" in
      *"create namespace"*) echo "kind: Namespace" ;;
      *"apply -f -"*) cat >/dev/null ;;
      *"get secret grafana-admin"*) [ -f "$STUB_STATE/grafana" ] || exit 1 ;;
      *"create secret generic grafana-admin"*) touch "$STUB_STATE/grafana" ;;
    esac ;;
esac
exit 0
"""


def _run_kind_up(tmp_path: Path, **env: str) -> list[str]:
    bin_dir = tmp_path / "bin"
    state = tmp_path / "state"
    log = tmp_path / f"log-{len(list(tmp_path.glob('log-*')))}"
    bin_dir.mkdir(exist_ok=True)
    state.mkdir(exist_ok=True)
    for name in ("docker", "kind", "kubectl", "helm", "make"):
        (bin_dir / name).write_text(STUB)
        (bin_dir / name).chmod(0o755)
    done = subprocess.run(
        [str(REPO_ROOT / "scripts" / "kind-up.sh")],
        env={
            **os.environ,
            "PATH": f"{bin_dir}:{os.environ['PATH']}",
            "STUB_LOG": str(log),
            "STUB_STATE": str(state),
            "IMAGE_TAG": "0123abc",
            **env,
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "http://localhost:30080" in done.stdout
    return log.read_text().splitlines()


def _index(calls: list[str], pattern: str) -> int:
    found = [i for i, c in enumerate(calls) if re.search(pattern, c)]
    assert found, f"no call matches {pattern!r}:\n" + "\n".join(calls)
    return found[0]


def test_kind_up_does_everything_in_order_and_again(tmp_path: Path) -> None:
    calls = _run_kind_up(tmp_path, KEDA="1")
    kps = r"kube-prometheus-stack prometheus-community/kube-prometheus-stack"
    images = " ".join(f"tasklab/{n}:0123abc" for n in ("api", "celery-worker", "consumer"))
    order = [
        _index(calls, r"^kind create cluster --name tasklab --config deploy/kind/cluster.yaml"),
        _index(calls, r"^make .*images IMAGE_TAG=0123abc"),
        _index(calls, rf"^kind load docker-image --name tasklab {images}$"),
        _index(calls, rf"^helm .*upgrade --install {kps} --version \d+\.\d+\.\d+ .*--wait"),
        _index(calls, r"-f deploy/kind/kube-prometheus-stack-values.yaml"),
        _index(calls, r"^helm .*upgrade --install keda kedacore/keda --version [\d.]+ .*--wait"),
        _index(calls, r"pod-security.kubernetes.io/enforce=restricted"),
        _index(calls, r"^helm .*upgrade --install tasklab deploy/helm/tasklab --namespace tasklab"),
        _index(calls, r"^kubectl config set-context --current --namespace tasklab"),
    ]
    assert order == sorted(order)
    install = calls[order[7]]
    expected = " ".join(a.replace(str(REPO_ROOT) + "/", "") for a in chart.kind_up_args(KEDA="1"))
    assert expected in install and install.endswith("--wait --timeout 15m")
    assert any("create secret generic grafana-admin" in c for c in calls)
    # Again: the cluster and the Grafana secret exist, everything else is re-applied.
    again = _run_kind_up(tmp_path, KEDA="1")
    assert not any(c.startswith("kind create") for c in again)
    assert not any("create secret generic grafana-admin" in c for c in again)
    _index(again, r"^helm .*upgrade --install tasklab ")


def test_kind_up_switches(tmp_path: Path, rendered: dict[str, list[Obj]]) -> None:
    # By default no autoscaler: the guide's kubectl scale holds (KEDA would undo it).
    calls = _run_kind_up(tmp_path)
    assert not any("kedacore/keda" in c for c in calls)
    install = calls[_index(calls, r"^helm .*upgrade --install tasklab ")]
    assert "autoscaling.mode" not in install
    (worker,) = chart.find(rendered["kind-up"], "Deployment", "celery-worker")
    assert "replicas" in worker["spec"]
    assert not chart.find(rendered["kind-up"], "ScaledObject")
    calls = _run_kind_up(tmp_path, MONITORING="0")
    assert not any("kube-prometheus-stack" in c for c in calls)
    install = calls[_index(calls, r"^helm .*upgrade --install tasklab ")]
    assert "monitoring.enabled=false" in install


@pytest.mark.parametrize("missing", ["docker", "kind", "kubectl", "helm", "uv"])
def test_kind_up_names_each_missing_tool(tmp_path: Path, missing: str) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("bash", "dirname", "git", "env", "cat"):
        target = shutil.which(name)
        assert target
        (bin_dir / name).symlink_to(target)
    for name in {"docker", "kind", "kubectl", "helm", "uv"} - {missing}:
        (bin_dir / name).write_text("#!/bin/sh\nexit 0\n")
        (bin_dir / name).chmod(0o755)
    done = subprocess.run(
        ["bash", str(REPO_ROOT / "scripts" / "kind-up.sh")],
        env={"PATH": str(bin_dir), "IMAGE_TAG": "x", "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 1
    assert f"'{missing}' not found" in done.stderr
    assert done.stderr.count("not found") == 1


def test_image_tag_changes_with_every_edit(tmp_path: Path) -> None:
    """A changed tree gets a new tag on every edit, so that kind-up's helm upgrade
    rolls the pods onto the rebuilt images (one "-dirty" tag for every edit did not)."""
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    shutil.copy(REPO_ROOT / "scripts" / "image-tag.sh", repo / "scripts")
    (repo / "app.py").write_text("one\n")

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
            cwd=repo,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()

    def tag() -> str:
        return subprocess.run(
            ["bash", str(repo / "scripts" / "image-tag.sh")],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()

    git("init", "-q")
    git("add", ".")
    git("commit", "-q", "-m", "init")
    clean = tag()
    assert clean == git("rev-parse", "--short", "HEAD")
    (repo / "app.py").write_text("two\n")
    edited = tag()
    (repo / "app.py").write_text("three\n")
    edited_again = tag()
    (repo / "new.py").write_text("x\n")
    untracked = tag()
    (repo / "new.py").write_text("y\n")
    untracked_edited = tag()
    tags = [edited, edited_again, untracked, untracked_edited]
    assert all(re.fullmatch(rf"{clean}-dirty-[0-9a-f]{{8}}", t) for t in tags), tags
    assert len(set(tags)) == len(tags), tags
    (repo / "new.py").unlink()
    (repo / "app.py").write_text("one\n")
    assert tag() == clean
