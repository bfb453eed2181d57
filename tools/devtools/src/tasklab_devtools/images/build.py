"""Building the three service images from the one Dockerfile (``make images``)."""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tasklab_devtools.images.engine import build_env, image_size, say

#: The services with an image, each a stage (``--target``) of :data:`DOCKERFILE`.
SERVICES = ("api", "celery-worker", "consumer")
#: The Dockerfile of every service image, relative to the repository root.
DOCKERFILE = Path("services/Dockerfile")
_BASE_ARG = re.compile(r"^ARG PYTHON_IMAGE=(\S+)\s*$", re.MULTILINE)


def repo_root(start: Path | None = None) -> Path:
    """The repository root: the nearest folder upwards with :data:`DOCKERFILE`."""
    here = (start or Path.cwd()).absolute()
    for folder in (here, *here.parents):
        if (folder / DOCKERFILE).is_file():
            return folder
    raise RuntimeError(f"no {DOCKERFILE} in {here} or above: run from the repo")


def pinned_base_image(root: Path) -> str:
    """The default of the Dockerfile's ``ARG PYTHON_IMAGE``."""
    found = _BASE_ARG.findall((root / DOCKERFILE).read_text())
    if len(found) != 1:
        raise RuntimeError(f"expected one ARG PYTHON_IMAGE in {DOCKERFILE}: {found}")
    return str(found[0])


# ------------------------------------------------------------------ build


@dataclass
class Built:
    """One image built by :func:`build_images`."""

    service: str
    ref: str
    seconds: float
    size: int


def build_images(
    root: Path,
    tag: str,
    log_dir: Path,
    *,
    repo: str = "tasklab",
    base: str | None = None,
    extra_tags: Sequence[str] = ("dev",),
    network: str = "host",
) -> list[Built]:
    """``docker build`` every service as ``<repo>/<service>:<tag>`` (and extra tags).

    ``base`` overrides the Dockerfile's ``PYTHON_IMAGE``. Each build's output goes to
    ``log_dir/build-<service>.log``.
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    env = build_env()
    results = []
    for service in SERVICES:
        ref = f"{repo}/{service}:{tag}"
        argv = ["docker", "build", "--network", network, "-f", str(root / DOCKERFILE)]
        argv += ["--target", service, "--build-arg", f"SERVICE={service}"]
        for extra in (tag, *extra_tags):
            argv += ["-t", f"{repo}/{service}:{extra}"]
        if base is not None:
            argv += ["--build-arg", f"PYTHON_IMAGE={base}"]
        argv += [
            "--label", f"org.opencontainers.image.title=tasklab-{service}",
            "--label", f"org.opencontainers.image.description=tasklab {service} service",
            "--label", f"org.opencontainers.image.version={tag}",
            "--label", f"org.opencontainers.image.base.name={base or pinned_base_image(root)}",
            str(root),
        ]  # fmt: skip
        log_path = log_dir / f"build-{service}.log"
        say(f"building {ref} (log: {log_path})")
        began = time.monotonic()
        with log_path.open("w") as log:
            done = subprocess.run(
                argv, stdout=log, stderr=subprocess.STDOUT, env=env, check=False, timeout=1800
            )
        seconds = time.monotonic() - began
        if done.returncode != 0:
            tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-40:])
            raise RuntimeError(f"building {ref} failed ({done.returncode}):\n{tail}")
        built = Built(service, ref, seconds, image_size(ref))
        say(f"built {ref} in {seconds:.1f} s, {built.size / 1e6:.0f} MB")
        results.append(built)
    return results
