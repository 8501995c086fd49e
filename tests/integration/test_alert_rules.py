"""docs/alerts.yml under promtool: the rules load, their unit tests pass, and each rule is tested per supervisor.

The unit tests themselves are tests/data/alerts_test.yml (promtool's format); here they are run, and checked
for cover: every alert has a case with two or more scraped supervisors in which it fires for some of them
only, so a rule that sums or ``absent()``s over every target cannot pass.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from ruamel.yaml import YAML

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "docs" / "alerts.yml"
RULE_TESTS = REPO / "tests" / "data" / "alerts_test.yml"
needs_promtool = pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool (Debian package prometheus) not installed"
)


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=60, check=False)


def _load(path: Path) -> Any:
    return YAML(typ="safe", pure=True).load(path.read_text(encoding="utf-8"))


def _instances(series: list[dict[str, str]]) -> set[str]:
    """The autotrain targets an input series list scrapes (``instance`` of every job="autotrain" series)."""
    found = set()
    for entry in series:
        # A promtool series is a metric in text format; the parser wants a value after it.
        (family,) = text_string_to_metric_families(f"{entry['series']} 0\n")
        (sample,) = family.samples
        if sample.labels.get("job") == "autotrain" and "instance" in sample.labels:
            found.add(sample.labels["instance"])
    return found


@needs_promtool
def test_promtool_accepts_the_rules() -> None:
    check = _promtool("check", "rules", str(RULES))
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"SUCCESS: {len(_load(RULES)['groups'][0]['rules'])} rules found" in check.stdout


@needs_promtool
def test_the_rules_pass_their_promtool_unit_tests() -> None:
    run = _promtool("test", "rules", str(RULE_TESTS))
    assert run.returncode == 0, run.stdout + run.stderr
    assert "SUCCESS" in run.stdout, run.stdout


def test_every_rule_fires_for_one_of_several_supervisors_only() -> None:
    alerts = {rule["alert"] for group in _load(RULES)["groups"] for rule in group["rules"]}
    cases = _load(RULE_TESTS)
    assert cases["rule_files"] == ["../../docs/alerts.yml"]
    per_instance: set[str] = set()
    for case in cases["tests"]:
        scraped = _instances(case["input_series"])
        for check in case["alert_rule_test"]:
            fired = {alert["exp_labels"].get("instance") for alert in check["exp_alerts"]}
            if fired and None not in fired and len(scraped) >= 2 and fired < scraped:
                per_instance.add(check["alertname"])
    assert per_instance == alerts, (
        f"no case where these fire for one of two supervisors: {alerts - per_instance}"
    )
