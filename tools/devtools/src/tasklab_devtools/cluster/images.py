"""The images the test cluster runs, built here (no registry can be reached).

``tools/cluster/images/<name>/Dockerfile`` each: the sandbox (pause), CoreDNS, the
local-path provisioner and its busybox helper from the programs :mod:`.build` made,
and a RabbitMQ stand-in from Debian's ``rabbitmq-server`` for the chart's broker
(values :data:`BROKER_VALUES`). With the three service images of ``make images`` they
go into one ``docker save`` archive that :meth:`.node.Node.import_image` loads into
the node's containerd; every pod then finds its image there and nothing is pulled.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from tasklab_devtools.cluster.build import repo_root
from tasklab_devtools.cluster.config import PAUSE_IMAGE
from tasklab_devtools.images import (
    STANDIN_IMAGE,
    DockerEngine,
    build_env,
    build_images,
    ensure_base_image,
    ensure_debian_packages,
    image_exists,
    pinned_base_image,
)

__all__ = ["BROKER_IMAGE", "BROKER_VALUES", "addon_images", "build_and_save"]


#: The add-ons' images: ``(image folder, Go module under tools/cluster, the module whose
#: version tags the image, the program it holds)``, for the modules that were built.
_ADDON_IMAGES = (
    ("pause", "addons", None, "pause"),
    ("coredns", "addons", "github.com/coredns/coredns", "coredns"),
    (
        "local-path-provisioner",
        "addons",
        "github.com/rancher/local-path-provisioner",
        "local-path-provisioner",
    ),
    ("keda", "keda", "github.com/kedacore/keda/v2", "operator"),
    ("keda-metrics-apiserver", "keda", "github.com/kedacore/keda/v2", "adapter"),
    ("metrics-server", "metrics-server", "sigs.k8s.io/metrics-server", "metrics-server"),
    ("prometheus", "prometheus", "github.com/prometheus/prometheus", "prometheus"),
    (
        "prometheus-operator",
        "prometheus-operator",
        "github.com/prometheus-operator/prometheus-operator",
        "operator",
    ),
    (
        "prometheus-config-reloader",
        "prometheus-operator",
        "github.com/prometheus-operator/prometheus-operator",
        "prometheus-config-reloader",
    ),
    (
        "kube-state-metrics",
        "kube-state-metrics",
        "k8s.io/kube-state-metrics/v2",
        "kube-state-metrics",
    ),
)


#: The broker stand-in and the chart values that select it.
BROKER_IMAGE = "tasklab.local/rabbitmq:3.10-bookworm"
BROKER_VALUES = (
    "--set-string", f"rabbitmq.image.repository={BROKER_IMAGE.split(':')[0]}",
    "--set-string", f"rabbitmq.image.tag={BROKER_IMAGE.split(':')[1]}",
    "--set-string", "rabbitmq.image.pullPolicy=Never",
)  # fmt: skip
_BUSYBOX = Path("/bin/busybox")


def _say(message: str) -> None:
    print(f"[cluster] {message}", file=sys.stderr, flush=True)


def addon_images(bins: dict[str, Path]) -> dict[str, tuple[str, Path]]:
    """``{image folder: (reference, program to copy into its context)}``."""
    from tasklab_devtools.cluster.build import module_version

    images = {"busybox": ("tasklab.local/busybox:bookworm", _BUSYBOX)}
    for folder, module, versioned, program in _ADDON_IMAGES:
        if module not in bins:
            continue
        if versioned is None:
            ref = PAUSE_IMAGE
        else:
            version = module_version(repo_root() / "tools" / "cluster" / module, versioned)
            ref = f"tasklab.local/{folder}:{version}"
        images[folder] = (ref, bins[module] / program)
    return images


def _docker_build(context: Path, ref: str, log: Path, *args: str) -> None:
    with log.open("a") as out:
        done = subprocess.run(
            ["docker", "build", "--network", "host", "-t", ref, *args, str(context)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=build_env(),
            check=False,
            timeout=1800,
        )
    if done.returncode != 0:
        raise RuntimeError(f"docker build {ref} failed; see {log}")


def build_and_save(
    bins: dict[str, Path],
    service_tag: str | None,
    out: Path,
    log_dir: Path,
    *,
    present: frozenset[str] = frozenset(),
) -> Path | None:
    """Build the cluster's images (the services' at ``service_tag`` unless they are
    there); save those the node does not have yet (``present``)
    into ``out`` (a docker archive); None when it has them all."""
    ensure_debian_packages({"busybox": "busybox-static"})
    static = subprocess.run(["ldd", str(_BUSYBOX)], capture_output=True, text=True, check=False)
    if static.returncode == 0:
        raise RuntimeError(
            f"{_BUSYBOX} is linked dynamically (Debian's busybox); the helper image needs "
            "the static one: apt-get install -y busybox-static"
        )
    root = repo_root()
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / "images.log"
    refs = []
    with DockerEngine(log_dir), tempfile.TemporaryDirectory(prefix="tasklab-images-") as tmp:
        for folder, (ref, program) in addon_images(bins).items():
            context = Path(tmp) / folder
            shutil.copytree(root / "tools" / "cluster" / "images" / folder, context)
            shutil.copy2(program, context / program.name)
            _docker_build(context, ref, log)
            refs.append(ref)
        if not image_exists(BROKER_IMAGE):
            _say(f"building the broker stand-in {BROKER_IMAGE} (Debian's rabbitmq-server)")
            if not image_exists(STANDIN_IMAGE):
                ensure_base_image(pinned_base_image(root), allow_standin=True)
            _docker_build(
                root / "tools" / "cluster" / "images" / "rabbitmq",
                BROKER_IMAGE,
                log,
                "--build-arg",
                f"BASE={STANDIN_IMAGE}",
            )
        refs.append(BROKER_IMAGE)
        if service_tag is not None:
            services = [f"tasklab/{s}:{service_tag}" for s in ("api", "celery-worker", "consumer")]
            if not all(image_exists(ref) for ref in services):
                base = ensure_base_image(pinned_base_image(root), allow_standin=True)
                build_images(root, service_tag, log_dir, base=base)
            refs += services
        refs = [ref for ref in refs if ref not in present]
        if not refs:
            return None
        _say(f"saving {len(refs)} images for the node")
        done = subprocess.run(
            ["docker", "save", "-o", str(out), *refs],
            capture_output=True,
            text=True,
            check=False,
            timeout=900,
        )
        if done.returncode != 0:
            raise RuntimeError(f"docker save failed: {done.stderr.strip()}")
    return out
