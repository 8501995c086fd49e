"""docs/grafana-dashboard.json and docs/alerts.yml against the /metrics collector, and the dashboard's layout.

Every metric they query must be one the collector exposes, and every label they group or match by must be
on that metric (or be a target label Prometheus adds: job, instance). The integration test of /metrics
checks the names against a live run; this one needs no run and scores eval rounds, so the eval families
carry samples and labels.
"""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from ruamel.yaml import YAML
from ui_builders import busy_state, view

from heidi_engine.bus.state import EvalSample, EvalScores
from heidi_engine.ui.http.metrics import exposition
from heidi_engine.ui.status_view import Health

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "docs" / "grafana-dashboard.json"
ALERTS = ROOT / "docs" / "alerts.yml"
NAME = re.compile(r"\bautotrain_[a-z0-9_]+")
GROUPING = re.compile(r"\b(?:by|on)\s*\(([^)]*)\)")
TARGET_LABELS = {"job", "instance"}


def _dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return loaded


def _expressions() -> list[str]:
    alerts = YAML(typ="safe", pure=True).load(ALERTS.read_text(encoding="utf-8"))
    rules = [rule["expr"] for group in alerts["groups"] for rule in group["rules"]]
    return [target["expr"] for panel in _dashboard()["panels"] for target in panel["targets"]] + rules


def _exposed_labels() -> dict[str, set[str]]:
    """Each name a query may use (a family, or a sample name such as a counter's ``_total``) -> its labels."""
    state = busy_state()
    state.config["MAX_COST_USD"] = 2.0
    scores = EvalScores(val_loss=1.5, n_val=4, val_pass_at_1=0.5, val_ci=(0.15, 0.85), humaneval_pass_at_1=0.25,
                        n_humaneval=4)  # fmt: skip
    state.evals = [EvalSample(round=1, base=scores, adapter=scores, base_round=1, best_round=1)]
    state.best_round = 1
    text = exposition(lambda: (view(state), Health("ok"))).decode()
    labels: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        names = {family.name} | ({family.name + "_total"} if family.type == "counter" else set())
        for name in names | {sample.name for sample in family.samples}:
            labels.setdefault(name, set()).update(key for s in family.samples for key in s.labels)
    return labels


def test_every_metric_queried_is_exposed() -> None:
    queried = set(NAME.findall(DASHBOARD.read_text(encoding="utf-8") + ALERTS.read_text(encoding="utf-8")))
    assert {"autotrain_eval_heldout_pass_at_1", "autotrain_eval_val_loss"} <= queried
    missing = queried - _exposed_labels().keys()
    assert not missing, f"queried but not exposed by /metrics: {sorted(missing)}"


def test_every_label_grouped_or_matched_by_is_on_the_metric() -> None:
    exposed = _exposed_labels()
    checked = 0
    for expr in _expressions():
        for grouping in GROUPING.finditer(expr):
            metric = (NAME.findall(expr[grouping.end() :]) or NAME.findall(expr))[0]
            wanted = {label.strip() for label in grouping.group(1).split(",") if label.strip()}
            have = exposed.get(metric, set()) | TARGET_LABELS
            assert wanted <= have, f"{expr!r}: {metric} has no label {sorted(wanted - have)}"
            checked += 1
    assert checked


def test_panel_ids_are_unique_and_the_panels_do_not_overlap() -> None:
    panels = _dashboard()["panels"]
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), ids
    cells: dict[tuple[int, int], int] = {}
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        for cell in itertools.product(
            range(grid["x"], grid["x"] + grid["w"]), range(grid["y"], grid["y"] + grid["h"])
        ):
            assert cell not in cells, f"{panel['title']!r} overlaps panel {cells[cell]} at {cell}"
            cells[cell] = panel["id"]
