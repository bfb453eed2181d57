"""Offline checks of the Helm chart (deploy/helm/tasklab): no cluster is needed.

The chart is rendered once per value set (the sets kept in the chart's ci/ folder and
the variants of `make kind-up`) with the pinned helm of .tools/ (scripts/k8s-tools.sh
installs it; the session fixture runs it, which is quick when all is there).
"""

from __future__ import annotations

import pytest

from tasklab_devtools import chart
from tasklab_devtools.chart import Obj


@pytest.fixture(scope="session")
def tools() -> None:
    chart.install_tools()


@pytest.fixture(scope="session")
def rendered(tools: None) -> dict[str, list[Obj]]:
    """Value set name -> the rendered objects."""
    return chart.render_all(chart.value_sets())


@pytest.fixture(scope="session")
def default_docs(rendered: dict[str, list[Obj]]) -> list[Obj]:
    return rendered["default"]
