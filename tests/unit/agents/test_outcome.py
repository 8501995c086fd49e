"""The eval outcome: Wilson intervals, the run's base scores, and which round is best."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from heidi_engine.agents.evaluation.outcome import Best, SavedBase, best_round, load_base, save_base, wilson
from heidi_engine.agents.evaluation.results import Job, add_paired, outcomes, variant_scores


def report(rate: float | None, loss: float | None, n_val: int = 4) -> dict[str, Any]:
    return {"adapter": {"val_pass_at_1": rate, "val_loss": loss, "n_val": n_val}}


@pytest.mark.parametrize(
    ("passed", "n", "low", "high"),
    [(0, 10, 0.0, 0.2775), (5, 10, 0.2366, 0.7634), (10, 10, 0.7225, 1.0), (1, 1, 0.2065, 1.0), (81, 263, 0.2553, 0.3662)],
)
def test_wilson_matches_the_published_values(passed: int, n: int, low: float, high: float) -> None:
    interval = wilson(passed, n)
    assert interval is not None
    assert math.isclose(interval[0], low, abs_tol=5e-4) and math.isclose(interval[1], high, abs_tol=5e-4)


def test_wilson_of_nothing_is_none_and_impossible_counts_are_refused() -> None:
    assert wilson(0, 0) is None
    with pytest.raises(ValueError, match="passed"):
        wilson(3, 2)


def test_pass_at_1_wins_over_a_lower_loss() -> None:
    assert best_round({1: report(0.25, 0.5), 2: report(0.75, 0.9), 3: report(0.5, 0.1)}) == Best(2, 0.75, 0.9)


def test_a_pass_at_1_tie_goes_to_the_lower_loss_then_to_the_later_round() -> None:
    assert best_round({1: report(0.5, 0.4), 2: report(0.5, 0.6)}) == Best(1, 0.5, 0.4)
    assert best_round({3: report(0.5, 0.4), 1: report(0.5, 0.4)}) == Best(3, 0.5, 0.4)
    assert best_round({1: report(0.5, None), 2: report(0.5, 0.7)}) == Best(2, 0.5, 0.7)


def test_with_the_gate_off_the_lowest_loss_wins_and_the_later_round_on_a_tie() -> None:
    assert best_round({1: report(None, 0.5), 2: report(None, 0.7), 3: report(None, 0.6)}) == Best(1, None, 0.5)
    assert best_round({1: report(None, 0.5), 2: report(None, 0.5)}) == Best(2, None, 0.5)
    assert best_round({1: report(None, float("nan")), 2: report(None, 0.9), 3: report(True, True)}) == Best(
        2, None, 0.9
    )


def test_a_round_with_no_heldout_rows_is_never_best() -> None:
    # Round 2 scored perfectly, but on no held-out row (as a training-row fallback would): it cannot win.
    assert best_round({1: report(0.25, 0.9), 2: report(1.0, 0.01, n_val=0)}) == Best(1, 0.25, 0.9)
    assert best_round({2: report(1.0, 0.01, n_val=0)}) is None
    assert best_round({}) is None
    assert best_round({1: {"adapter": None}}) is None


def test_the_base_is_reused_only_for_the_same_measurement(tmp_path: Path) -> None:
    measured_on = {"model": "m", "heldout": ["a", "b"], "humaneval": ["HumanEval/0"]}
    assert load_base(tmp_path, measured_on) is None
    outcomes = {"heldout": {"a": True, "b": False}, "humaneval": {"HumanEval/0": False}}
    save_base(tmp_path, 1, measured_on, {"val_loss": 1.5}, outcomes)
    assert load_base(tmp_path, measured_on) == SavedBase(1, {"val_loss": 1.5}, outcomes)
    assert load_base(tmp_path, {**measured_on, "heldout": ["a"]}) is None
    (tmp_path / "eval" / "base.json").write_text("{torn")
    assert load_base(tmp_path, measured_on) is None


def test_a_base_saved_before_outcomes_were_kept_gives_no_paired_comparison(tmp_path: Path) -> None:
    measured_on = {"model": "m", "heldout": ["a"], "humaneval": []}
    (tmp_path / "eval").mkdir()
    old = {"round": 1, "measured_on": measured_on, "scores": {"val_pass_at_1": 0.0}}
    (tmp_path / "eval" / "base.json").write_text(json.dumps(old))
    saved = load_base(tmp_path, measured_on)
    assert saved == SavedBase(1, {"val_pass_at_1": 0.0}, {})
    adapter: dict[str, Any] = {}
    add_paired(adapter, saved.outcomes, {"heldout": {"a": True}, "humaneval": {}})
    assert adapter == {"val_paired": None, "humaneval_paired": None}
    # A hand-edited file with a non-boolean outcome keeps only what it can trust.
    (tmp_path / "eval" / "base.json").write_text(json.dumps({**old, "outcomes": {"heldout": {"a": "yes", "b": True}}}))
    assert load_base(tmp_path, measured_on) == SavedBase(1, {"val_pass_at_1": 0.0}, {"heldout": {"b": True}})


def _job(variant: str, kind: str, item: str, passed: bool) -> Job:
    return Job(variant, kind, item, "code", "tests", None, "code", passed)


def test_jobs_give_each_variants_scores_outcomes_and_the_adapters_paired_comparison() -> None:
    jobs = [
        _job("base", "val", "t1", False), _job("adapter", "val", "t1", True),
        _job("base", "val", "t2", True), _job("adapter", "val", "t2", True),
        _job("base", "humaneval", "HumanEval/0", False), _job("adapter", "humaneval", "HumanEval/0", False),
    ]  # fmt: skip
    scores = variant_scores((0.5, math.exp(0.5)), jobs, "adapter")
    assert scores["val_pass_at_1"] == 1.0 and scores["val_passed"] == 2 and scores["n_humaneval"] == 1
    assert scores["humaneval_pass_at_1"] == 0.0 and scores["val_ci"] == list(wilson(2, 2) or ())
    base, adapter = outcomes(jobs, "base"), outcomes(jobs, "adapter")
    assert base == {"heldout": {"t1": False, "t2": True}, "humaneval": {"HumanEval/0": False}}
    add_paired(scores, base, adapter)
    assert scores["val_paired"] == {"n": 2, "base_passed": 1, "adapter_passed": 2, "gained": 1, "lost": 0, "p": 1.0}
    assert scores["humaneval_paired"]["n"] == 1 and scores["humaneval_paired"]["gained"] == 0
    assert [job.record()["kind"] for job in jobs[:2]] == ["heldout", "heldout"]
