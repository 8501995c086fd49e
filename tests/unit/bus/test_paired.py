"""The paired comparison of base and adapter: McNemar's exact test, task by task counts, and the words a
user reads (better, worse, no measurable change, too few to tell)."""

from __future__ import annotations

import itertools
import math

import pytest
from pydantic import ValidationError

from heidi_engine.agents.evaluation.outcome import paired
from heidi_engine.bus.paired import TELLING_TASKS, PairedScores, mcnemar_exact
from heidi_engine.bus.state import EvalSample, EvalScores
from heidi_engine.ui.eval_text import eval_line, paired_words, verdict


def _by_enumeration(gained: int, lost: int) -> float:
    """Two-sided exact p the slow way: every way the changed tasks could have split, fair coins, summing
    the probability of each split at least as uneven as the one seen."""
    n = gained + lost
    if n == 0:
        return 1.0
    seen = abs(gained - lost)
    uneven = sum(1 for flips in itertools.product((0, 1), repeat=n) if abs(2 * sum(flips) - n) >= seen)
    return min(1.0, uneven / 2**n)


@pytest.mark.parametrize(("gained", "lost"), [(0, 0), (1, 0), (3, 3), (5, 0), (6, 0), (4, 1), (2, 9), (7, 5)])
def test_mcnemar_exact_matches_enumerating_every_split(gained: int, lost: int) -> None:
    assert math.isclose(mcnemar_exact(gained, lost), _by_enumeration(gained, lost), rel_tol=1e-12)
    assert mcnemar_exact(gained, lost) == mcnemar_exact(lost, gained)


def test_mcnemar_exact_matches_the_published_values() -> None:
    # 10 discordant pairs one way and 2 the other: the textbook exact p is 0.0386 (2 * 79 / 4096).
    assert math.isclose(mcnemar_exact(10, 2), 158 / 4096)
    assert mcnemar_exact(0, 0) == 1.0 and mcnemar_exact(3, 3) == 1.0
    assert math.isclose(mcnemar_exact(60, 40), 0.0569, abs_tol=5e-4)  # large n stays exact, no overflow
    with pytest.raises(ValueError, match="gained=-1"):
        mcnemar_exact(-1, 2)


def test_six_changed_tasks_are_the_fewest_that_can_tell() -> None:
    assert TELLING_TASKS == 6
    assert mcnemar_exact(5, 0) > 0.05 > mcnemar_exact(6, 0)


def test_paired_counts_only_the_tasks_both_answered() -> None:
    base = {"a": True, "b": False, "c": False, "d": True, "only-base": True}
    adapter = {"a": True, "b": True, "c": False, "d": False, "only-adapter": False}
    pair = paired(base, adapter)
    assert pair == PairedScores(n=4, base_passed=2, adapter_passed=2, gained=1, lost=1, p=1.0)
    assert paired({"x": True}, {"y": True}) is None


def test_paired_scores_refuse_impossible_values() -> None:
    with pytest.raises(ValidationError):
        PairedScores(n=3, base_passed=1, adapter_passed=1, gained=0, lost=0, p=1.5)
    with pytest.raises(ValidationError):
        PairedScores(n=-1, base_passed=1, adapter_passed=1, gained=0, lost=0, p=0.5)


def _pair(base: list[bool], adapter: list[bool]) -> PairedScores:
    found = paired({f"t{i}": b for i, b in enumerate(base)}, {f"t{i}": a for i, a in enumerate(adapter)})
    assert found is not None
    return found


def test_the_verdict_in_words_better_worse_unchanged_and_too_few() -> None:
    # 25 held-out tasks: the base passes 9; the adapter keeps those and solves 6 more but loses 1.
    base = [True] * 9 + [False] * 16
    better = [True] * 8 + [False] + [True] * 6 + [False] * 10
    assert paired_words(_pair(base, better)) == (
        "no measurable change on 25 held-out tasks: 9/25 → 14/25 (6 gained, 1 lost, p = 0.12)"
    )
    much_better = [True] * 9 + [True] * 7 + [False] * 9
    assert (
        paired_words(_pair(base, much_better))
        == "better on 25 held-out tasks: 9/25 → 16/25 (7 gained, 0 lost, p = 0.016)"
    )
    assert (
        paired_words(_pair(much_better, base))
        == "worse on 25 held-out tasks: 16/25 → 9/25 (0 gained, 7 lost, p = 0.016)"
    )
    unchanged = [True, False, False, False, False, False]
    assert paired_words(_pair(unchanged, unchanged)) == (
        "no measurable change on 6 held-out tasks: 1/6 → 1/6 (0 gained, 0 lost, p = 1)"
    )
    # Four tasks can never tell: even all four gained is p = 0.125.
    assert paired_words(_pair([False] * 4, [True] * 4)) == (
        "too few held-out tasks to tell: 0/4 → 4/4 (4 gained, 0 lost; p < 0.05 needs 6 or more to change)"
    )
    strong = _pair([False] * 40, [True] * 30 + [False] * 10)
    assert (
        paired_words(strong, "problem")
        == "better on 40 problems: 0/40 → 30/40 (30 gained, 0 lost, p < 0.001)"
    )


def test_the_outcome_line_carries_the_paired_verdict_where_eval_measured_it() -> None:
    base = [True] * 9 + [False] * 16
    pair = _pair(base, [True] * 9 + [True] * 7 + [False] * 9)
    scores = EvalScores(n_val=25, val_pass_at_1=9 / 25, val_passed=9, val_loss=0.9)
    adapter = scores.model_copy(update={"val_pass_at_1": 16 / 25, "val_passed": 16, "val_loss": 0.7,
                                        "val_paired": pair})  # fmt: skip
    sample = EvalSample(round=2, base=scores, adapter=adapter, base_round=1, best_round=2)
    assert verdict(scores, adapter) == paired_words(pair)
    assert eval_line([sample], 2) == (
        "round 2 · held-out: better on 25 held-out tasks: 9/25 → 16/25 (7 gained, 0 lost, p = 0.016) · "
        "val loss 0.900 → 0.700 (-0.200) · best round 2"
    )
    assert (
        eval_line([sample], 2, compact=True) == "r2 · better 9/25→16/25 p=0.016 · best r2"
    )
    # It survives the wire: a viewer validating the sample gets the same words.
    again = EvalSample.model_validate(sample.model_dump(mode="json"))
    assert eval_line([again], 2) == eval_line([sample], 2)
