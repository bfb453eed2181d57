"""``python -m tasklab_devtools.images build|verify``: the commands of ``make images``
and ``make verify-images``."""

from __future__ import annotations

import argparse
import contextlib
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from tasklab_devtools.images.base import ensure_base_image
from tasklab_devtools.images.build import build_images, pinned_base_image, repo_root
from tasklab_devtools.images.checks import ImageRun, check_images
from tasklab_devtools.images.engine import DockerEngine, docker, docker_answers, image_exists, say

# ------------------------------------------------------------------ commands


@contextlib.contextmanager
def _work_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="tasklab-verify-images-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def verify(
    root: Path, tag: str, repo: str, log_dir: Path, base: str | None = None
) -> dict[str, float]:
    """Engine, base, builds and run checks (see the module's docstring); the timings.

    ``base`` (an image that is present or pullable) replaces the pinned base and its
    stand-in.
    """
    timings: dict[str, float] = {}
    began = time.monotonic()
    with DockerEngine(log_dir) as engine:
        if engine.started_here:
            timings["dockerd start"] = engine.start_seconds
        step = time.monotonic()
        if base is None:
            base = ensure_base_image(pinned_base_image(root), allow_standin=True)
        elif not image_exists(base):
            docker("pull", base, timeout=600)
        timings["base image"] = time.monotonic() - step
        built = build_images(root, tag, log_dir, repo=repo, base=base)
        for image in built:
            timings[f"build {image.service}"] = image.seconds
        with _work_dir() as work:
            run = ImageRun(tag, repo, log_dir, work)
            try:
                check_images(run, timings)
            finally:
                step = time.monotonic()
                run.close()
                timings["clean-up"] = time.monotonic() - step
        sizes = ", ".join(f"{image.ref} {image.size / 1e6:.0f} MB" for image in built)
        step = time.monotonic()
    if engine.started_here:
        timings["dockerd stop"] = time.monotonic() - step
    timings["total"] = time.monotonic() - began
    say(f"images: {sizes}")
    say("timings: " + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in timings.items()))
    say("verify-images: OK")
    return timings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tasklab_devtools.images",
        description="Build the service images and check that they really run.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (("build", "build the three images"), ("verify", "build and run-check them")):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("--tag", required=True, help="image tag, e.g. the short git sha")
        cmd.add_argument("--repo", default="tasklab", help="image name prefix (default tasklab)")
        cmd.add_argument("--log-dir", type=Path, default=Path("artifacts/logs/images"))
        cmd.add_argument(
            "--base", default=None, help="override the Dockerfile's PYTHON_IMAGE build argument"
        )
    args = parser.parse_args(argv)
    root = repo_root()
    log_dir: Path = args.log_dir if args.log_dir.is_absolute() else root / args.log_dir
    log_dir.mkdir(parents=True, exist_ok=True)
    try:
        if args.command == "build":
            if not docker_answers():
                # (Not the flags make verify-images starts its own engine with: without a
                # bridge and iptables, kind's node containers would have no network.)
                raise RuntimeError(
                    "no Docker engine answers: start Docker (Docker Desktop, or `sudo "
                    "systemctl start docker`) and try again; `docker info` must work"
                )
            if args.base:
                if not image_exists(args.base):
                    docker("pull", args.base, timeout=600)
            else:
                ensure_base_image(pinned_base_image(root), allow_standin=False)
            build_images(root, args.tag, log_dir, repo=args.repo, base=args.base or None)
        else:
            verify(root, args.tag, args.repo, log_dir, base=args.base or None)
    except (RuntimeError, TimeoutError, OSError, subprocess.TimeoutExpired) as exc:
        say(f"FAILED: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
