"""The UI's chart library: built from the npm lockfile into the api's static files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tasklab_devtools import uiassets


def test_built_from_the_lockfile_and_rebuilt_only_when_it_changes(tmp_path: Path) -> None:
    """A real ``npm ci`` and build into a folder of the test's own; the second call is a
    no-op, and a changed lockfile (here: its copy) makes the build stale again."""
    if shutil.which("npm") is None:
        pytest.fail("npm is needed (scripts/bootstrap.sh installs it)")
    vendor = tmp_path / "vendor"
    assert uiassets.missing(vendor) == [f"{name} is missing" for name in uiassets.FILES]
    assert uiassets.ensure(vendor=vendor, quiet=True) is True
    assert uiassets.missing(vendor) == []
    chart = (vendor / "chart.umd.min.js").read_text()
    locked = json.loads((uiassets.UI_DIR / "package-lock.json").read_text())
    version = locked["packages"]["node_modules/chart.js"]["version"]
    assert f"Chart.js v{version}" in chart[:200]
    assert "MIT" in (vendor / "chart.js.LICENSE.md").read_text()
    assert uiassets.ensure(vendor=vendor, quiet=True) is False

    ui = tmp_path / "ui"
    shutil.copytree(uiassets.UI_DIR, ui, ignore=shutil.ignore_patterns("node_modules"))
    (ui / "package-lock.json").write_text((ui / "package-lock.json").read_text() + "\n")
    assert uiassets.missing(vendor, ui) == ["built from another package-lock.json or build script"]


def test_without_npm_the_error_says_how_to_get_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(RuntimeError, match="apt-get install nodejs npm"):
        uiassets.ensure(vendor=tmp_path / "vendor", quiet=True)
