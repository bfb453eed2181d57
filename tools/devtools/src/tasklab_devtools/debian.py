"""Debian packages the tools need (RabbitMQ, Redis, PostgreSQL), installed when missing.

:func:`ensure_package` installs a package with ``apt-get`` when we are root on a
machine that has it, the way ``scripts/bootstrap.sh`` does; otherwise it raises
:class:`RuntimeError` with the command to run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable

__all__ = ["ensure_package", "install_hint"]


def install_hint(package: str) -> str:
    """The command that installs ``package`` on this machine (or what to do)."""
    if shutil.which("apt-get"):
        return "sudo apt-get update && sudo apt-get install -y --no-install-recommends " + package
    return f"install the {package} package with your system's package manager"


def ensure_package(package: str, installed: Callable[[], bool]) -> None:
    """Make sure ``package`` is installed (``installed()`` says whether it is).

    As root with ``apt-get``, installs it (``apt-get update`` first only when apt does
    not know the package yet; waits for another apt run's lock). Raises
    :class:`RuntimeError` with the command to run when it cannot install it from here,
    or when the installation fails or does not make ``installed()`` true.
    """
    if installed():
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise RuntimeError(f"{package} is not installed; run: {install_hint(package)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    wait_lock = ["-o", "DPkg::Lock::Timeout=600"]
    known = subprocess.run(
        ["apt-cache", "show", "--no-all-versions", package],
        env=env,
        capture_output=True,
        check=False,
    )
    commands = [] if known.returncode == 0 else [["apt-get", *wait_lock, "update", "-qq"]]
    commands.append(["apt-get", *wait_lock, "install", "-y", "--no-install-recommends", package])
    for command in commands:
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(
                f"`{' '.join(command)}` failed ({done.returncode}):\n"
                f"{(done.stdout + done.stderr)[-2000:]}"
            )
    if not installed():
        raise RuntimeError(f"{package} was installed but what it provides is not found")
