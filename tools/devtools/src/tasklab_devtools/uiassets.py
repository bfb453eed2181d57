"""The web UI's third-party browser libraries (Chart.js), built into the api's static files.

They are npm packages, pinned by ``services/api/ui/package-lock.json``: ``npm ci``
installs them from the registry and ``npm run build`` (``build.mjs``) copies their
browser builds and licences into ``services/api/src/tasklab_api/static/vendor/``,
which git ignores. ``make dev``, ``scripts/bootstrap.sh`` (so ``make test``) and the
UI tests call :func:`ensure`, which rebuilds only when the lockfile or the build script
changed since the last build (a stamp in the vendor folder); the api image builds them
in a stage of its own. Nothing is fetched at run time: the page loads them from the
api, so it works offline and behind a port-forward.

``python -m tasklab_devtools.uiassets [--force]`` builds them by hand.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

__all__ = ["UI_DIR", "VENDOR_DIR", "ensure", "missing", "stamp"]

_ROOT = Path(__file__).resolve().parents[4]
UI_DIR = _ROOT / "services" / "api" / "ui"
VENDOR_DIR = _ROOT / "services" / "api" / "src" / "tasklab_api" / "static" / "vendor"
#: What the page loads from the vendor folder (index.html).
FILES = ("chart.umd.min.js", "chart.js.LICENSE.md")
_STAMP = ".stamp"


def stamp(ui_dir: Path = UI_DIR) -> str:
    """A digest of what decides the build: the lockfile, the manifest, the build script."""
    digest = hashlib.sha256()
    for name in ("package.json", "package-lock.json", "build.mjs"):
        digest.update(name.encode() + b"\0" + (ui_dir / name).read_bytes() + b"\0")
    return digest.hexdigest()


def missing(vendor: Path = VENDOR_DIR, ui_dir: Path = UI_DIR) -> list[str]:
    """Why the vendor folder is not current ([] when it is)."""
    problems = [f"{name} is missing" for name in FILES if not (vendor / name).is_file()]
    recorded = vendor / _STAMP
    if not problems and (not recorded.exists() or recorded.read_text().strip() != stamp(ui_dir)):
        problems.append("built from another package-lock.json or build script")
    return problems


def _run(argv: list[str], cwd: Path) -> None:
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(
            f"`{' '.join(argv)}` failed in {cwd.name} (exit {done.returncode}):\n"
            f"{(done.stdout + done.stderr)[-3000:]}"
        )


def ensure(
    *, force: bool = False, ui_dir: Path = UI_DIR, vendor: Path = VENDOR_DIR, quiet: bool = False
) -> bool:
    """Build the vendor folder unless it is current; True when it was (re)built.

    Raises RuntimeError with the fix when npm is missing or the install fails.
    """
    if not force and not missing(vendor, ui_dir):
        return False
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError(
            "npm (Node.js 18 or later) is needed to build the UI's chart library into the "
            "api's static files: install it (Debian/Ubuntu: sudo apt-get install nodejs npm) "
            "and run `make ui-assets`"
        )
    if not quiet:
        print("ui-assets: npm ci (services/api/ui/package-lock.json)", file=sys.stderr, flush=True)
    # --ignore-scripts: no install script of any package runs; only our own build does.
    _run([npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"], ui_dir)
    _run([npm, "run", "--silent", "build", "--", "--out", str(vendor)], ui_dir)
    (vendor / _STAMP).write_text(stamp(ui_dir) + "\n")
    if not quiet:
        print(f"ui-assets: built into {vendor.relative_to(_ROOT)}", file=sys.stderr, flush=True)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tasklab_devtools.uiassets",
        description="Build the UI's chart library (npm) into the api's static files.",
    )
    parser.add_argument("--force", action="store_true", help="rebuild even when current")
    args = parser.parse_args(argv)
    try:
        built = ensure(force=args.force)
    except RuntimeError as exc:
        print(f"ui-assets: {exc}", file=sys.stderr)
        return 1
    if not built:
        print("ui-assets: up to date", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
