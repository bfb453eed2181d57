"""What a kind node runs besides Kubernetes itself: cluster DNS and a StorageClass.

* CoreDNS from ``tools/cluster/manifests/coredns.yaml`` (kubeadm's deployment of it);
* the local-path provisioner from **its own** manifest, read from the Go module cache
  (``deploy/local-path-storage.yaml`` of the version ``tools/cluster/addons/go.mod``
  pins), with kind's changes: its StorageClass is called ``standard`` and is the
  default; the images are the ones built here and never pulled.
"""

from __future__ import annotations

import string
import subprocess
from typing import Any

import yaml

from tasklab_devtools.cluster.build import module_source, repo_root
from tasklab_devtools.cluster.config import DNS_IP, Layout

__all__ = ["apply_addons", "kubectl"]

_DEFAULT_CLASS = "storageclass.kubernetes.io/is-default-class"


def kubectl_binary() -> str:
    tools = repo_root() / ".tools" / "bin" / "kubectl"
    if not tools.is_file():
        raise RuntimeError("kubectl is missing from .tools/bin: run scripts/k8s-tools.sh")
    return str(tools)


def kubectl(
    layout: Layout, *args: str, input_text: str | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """``kubectl ARGS`` with the cluster's admin kubeconfig; RuntimeError if it fails."""
    done = subprocess.run(
        [kubectl_binary(), "--kubeconfig", str(layout.kubeconfig), *args],
        input=input_text,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"kubectl {' '.join(args)}: {done.stderr.strip() or done.stdout.strip()}"
        )
    return done


def local_path_objects(provisioner_image: str, helper_image: str) -> list[dict[str, Any]]:
    """The provisioner's upstream manifest, with kind's StorageClass and our images."""
    source = (
        module_source("addons", "github.com/rancher/local-path-provisioner")
        / "deploy"
        / "local-path-storage.yaml"
    )
    objects = [o for o in yaml.safe_load_all(source.read_text()) if o]
    for obj in objects:
        kind = obj["kind"]
        if kind == "Deployment":
            for container in obj["spec"]["template"]["spec"]["containers"]:
                container["image"] = provisioner_image
                container["imagePullPolicy"] = "Never"
        elif kind == "StorageClass":
            obj["metadata"]["name"] = "standard"
            obj["metadata"].setdefault("annotations", {})[_DEFAULT_CLASS] = "true"
        elif kind == "ConfigMap" and "helperPod.yaml" in obj.get("data", {}):
            helper = yaml.safe_load(obj["data"]["helperPod.yaml"])
            for container in helper["spec"]["containers"]:
                container["image"] = helper_image
                container["imagePullPolicy"] = "Never"
            obj["data"]["helperPod.yaml"] = yaml.safe_dump(helper, sort_keys=False)
    return objects


def coredns_manifest(image: str) -> str:
    template = (repo_root() / "tools" / "cluster" / "manifests" / "coredns.yaml").read_text()
    return string.Template(template).substitute(COREDNS_IMAGE=image, DNS_IP=DNS_IP)


def apply_addons(layout: Layout, images: dict[str, str]) -> None:
    """Apply CoreDNS and the provisioner; wait until both answer."""
    kubectl(layout, "apply", "-f", "-", input_text=coredns_manifest(images["coredns"]))
    objects = local_path_objects(images["local-path-provisioner"], images["busybox"])
    kubectl(layout, "apply", "-f", "-", input_text=yaml.safe_dump_all(objects, sort_keys=False))
    for namespace, name in (
        ("kube-system", "coredns"),
        ("local-path-storage", "local-path-provisioner"),
    ):
        kubectl(
            layout,
            "-n",
            namespace,
            "rollout",
            "status",
            f"deployment/{name}",
            "--timeout=180s",
            timeout=200,
        )
