"""The base image: the one the Dockerfile pins, or a stand-in made with debootstrap where
it can be neither found nor pulled."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from tasklab_devtools.images.engine import (
    docker,
    ensure_debian_packages,
    image_exists,
    say,
)

#: Name of the locally made base image (debootstrap), used when the pinned one is missing.
STANDIN_IMAGE = "tasklab/python-standin:3.11-bookworm"
DEBIAN_MIRROR = os.environ.get("DEBIAN_MIRROR", "http://deb.debian.org/debian")
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


# ------------------------------------------------------------------ base image


def make_standin_base(tag: str = STANDIN_IMAGE) -> float:
    """Make a Python base image with debootstrap and import it as ``tag``; seconds taken.

    Debian bookworm (minbase) with python3 and python3-venv, trimmed like a slim
    image, with ``python3``/``python`` also in ``/usr/local/bin`` (as in the official
    image) and the host's CA bundle, so that pip and uv in a build trust whatever the
    host trusts.
    """
    ensure_debian_packages({"debootstrap": "debootstrap"})
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="tasklab-rootfs-", dir="/var/tmp") as tmp:
        rootfs = Path(tmp) / "rootfs"
        say(f"debootstrap bookworm (minbase + python3) from {DEBIAN_MIRROR}")
        done = subprocess.run(
            [
                "debootstrap",
                "--variant=minbase",
                "--include=python3,python3-venv,ca-certificates",
                "bookworm",
                str(rootfs),
                DEBIAN_MIRROR,
            ],
            capture_output=True,
            text=True,
            check=False,
            timeout=900,
        )
        if done.returncode != 0:
            raise RuntimeError(f"debootstrap failed:\n{(done.stdout + done.stderr)[-3000:]}")
        for folder in (
            "var/cache/apt/archives",
            "var/lib/apt/lists",
            "usr/share/doc",
            "usr/share/man",
            "usr/share/info",
        ):
            for entry in (rootfs / folder).glob("*"):
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                elif entry.name != "lock":
                    entry.unlink()
        local_bin = rootfs / "usr/local/bin"
        local_bin.mkdir(parents=True, exist_ok=True)
        for name in ("python3", "python"):
            (local_bin / name).unlink(missing_ok=True)
            (local_bin / name).symlink_to("/usr/bin/python3")
        if HOST_CA_BUNDLE.is_file():
            shutil.copyfile(HOST_CA_BUNDLE, rootfs / "etc/ssl/certs/ca-certificates.crt")
        tar = subprocess.Popen(
            ["tar", "-C", str(rootfs), "--numeric-owner", "-c", "."], stdout=subprocess.PIPE
        )
        imported = subprocess.run(
            [
                "docker", "import",
                "--change", "ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin",
                "--change", "ENV LANG=C.UTF-8",
                "--change", 'CMD ["python3"]',
                "--change", "LABEL org.opencontainers.image.description="
                "tasklab-local-stand-in-for-python-slim-bookworm",
                "--message", "debootstrap bookworm minbase + python3 (tasklab stand-in)",
                "-", tag,
            ],
            stdin=tar.stdout,
            capture_output=True,
            text=True,
            check=False,
        )  # fmt: skip
        if tar.stdout is not None:
            tar.stdout.close()
        tar.wait()
        if imported.returncode != 0 or tar.returncode != 0:
            raise RuntimeError(f"docker import failed:\n{imported.stdout}{imported.stderr}")
    seconds = time.monotonic() - began
    say(f"made the stand-in base {tag} in {seconds:.1f} s")
    return seconds


def ensure_base_image(pinned: str, allow_standin: bool) -> str | None:
    """The base image to build on: None for the pinned one (present or pulled), else
    :data:`STANDIN_IMAGE` (made when missing) if ``allow_standin``."""
    if image_exists(pinned):
        return None
    pulled = docker("pull", pinned, check=False, timeout=600)
    if pulled.returncode == 0:
        return None
    if not allow_standin:
        raise RuntimeError(
            f"base image {pinned} is not here and cannot be pulled ({pulled.stderr.strip()}).\n"
            f"Give another base with PYTHON_IMAGE=..., e.g. the stand-in {STANDIN_IMAGE} "
            "that `make verify-images` makes where Docker Hub is out of reach"
        )
    say(f"{pinned} cannot be pulled here; building on the local stand-in {STANDIN_IMAGE}")
    if not image_exists(STANDIN_IMAGE):
        make_standin_base(STANDIN_IMAGE)
    return STANDIN_IMAGE
