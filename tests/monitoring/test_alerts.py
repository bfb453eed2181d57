"""The chart's alert rules: valid for promtool, and each one unit-tested."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from tasklab_devtools import chart

PROMTOOL = "/usr/bin/promtool"
TESTS = Path(__file__).with_name("alerts_test.yaml")


@pytest.fixture(scope="module")
def rules_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    chart.install_tools()
    rules = chart.find(chart.render(), "PrometheusRule")
    assert len(rules) == 1
    out = tmp_path_factory.mktemp("rules")
    spec = rules[0]["spec"]
    (out / "rules.yaml").write_text(yaml.safe_dump(spec))
    # The unit tests compare labels; annotations (checked by `check rules`) are left out.
    for group in spec["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    (out / "rules-no-annotations.yaml").write_text(yaml.safe_dump(spec))
    tests = TESTS.read_text().replace("  - rules.yaml", "  - rules-no-annotations.yaml")
    (out / "alerts_test.yaml").write_text(tests)
    return out


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    if not Path(PROMTOOL).exists():
        pytest.fail("promtool is missing: run scripts/bootstrap.sh --test")
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, check=False)


def test_rules_are_valid(rules_dir: Path) -> None:
    result = _promtool("check", "rules", str(rules_dir / "rules.yaml"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_rules_unit_tests_pass(rules_dir: Path) -> None:
    result = _promtool("test", "rules", str(rules_dir / "alerts_test.yaml"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_firing_test(rules_dir: Path) -> None:
    groups = yaml.safe_load((rules_dir / "rules.yaml").read_text())["groups"]
    alerts = {r["alert"] for g in groups for r in g["rules"] if "alert" in r}
    cases = yaml.safe_load(TESTS.read_text())["tests"]
    fired = {t["alertname"] for c in cases for t in c["alert_rule_test"] if t.get("exp_alerts")}
    assert alerts == fired
    assert {
        "TasklabApiDown",
        "TasklabBacklogGrowing",
        "TasklabMessagesWithoutConsumer",
        "TasklabFailureRatioHigh",
        "TasklabEndToEndLatencyHigh",
        "TasklabCallbacksRejected",
    } <= alerts
