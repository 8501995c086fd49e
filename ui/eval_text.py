"""The eval outcome as plain text: the one line the Overview, ``--status`` and the Eval view show.

Rates are held-out pass@1 (the held-out tasks' own unit tests) and HumanEval pass@1, each as
base → adapter; intervals are the adapter's Wilson 95% interval with its ``n``. Where the eval stage compared
the two task by task (``val_paired``, ``humaneval_paired``), the outcome is that comparison in words:
better, worse or no measurable change by McNemar's exact test, or too few tasks to tell
(:mod:`heidi_engine.bus.paired`).
"""

from __future__ import annotations

from collections.abc import Sequence

from heidi_engine.bus.paired import TELLING_TASKS, PairedScores
from heidi_engine.bus.state import EvalSample, EvalScores

__all__ = ["diff", "eval_line", "interval", "num", "paired_words", "scores_of", "signed", "verdict"]

DASH = "–"


def num(value: float | None, digits: int) -> str:
    return DASH if value is None else f"{value:.{digits}f}"


def signed(value: float | None, digits: int) -> str:
    return DASH if value is None else f"{value:+.{digits}f}"


def diff(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def interval(ci: tuple[float, float] | None, n: int) -> str:
    return f"[{ci[0]:.2f}–{ci[1]:.2f}] n={n}" if ci is not None else f"n={n}"


def _p_value(p: float) -> str:
    return "p < 0.001" if p < 0.001 else f"p = {p:.2g}"


def _call(pair: PairedScores) -> str:
    """What the paired comparison says, in one word or phrase."""
    if pair.n < TELLING_TASKS:
        return "too few to tell"
    if pair.significant and pair.gained != pair.lost:
        return "better" if pair.gained > pair.lost else "worse"
    return "no measurable change"


def paired_words(pair: PairedScores, noun: str = "held-out task") -> str:
    """The paired outcome in words: "better on 25 held-out tasks: 9/25 → 16/25 (7 gained, 0 lost,
    p = 0.016)", "worse on …", "no measurable change on …", or, with fewer tasks than any split could
    tell from noise, "too few held-out tasks to tell: 1/4 → 2/4 (1 gained, 0 lost; p < 0.05 needs 6 or more to
    change)"."""
    n = pair.n
    counts = f"{pair.base_passed}/{n} → {pair.adapter_passed}/{n}"
    changed = f"{pair.gained} gained, {pair.lost} lost"
    call = _call(pair)
    if call == "too few to tell":
        return f"too few {noun}s to tell: {counts} ({changed}; p < 0.05 needs {TELLING_TASKS} or more to change)"
    return f"{call} on {n} {noun}{'' if n == 1 else 's'}: {counts} ({changed}, {_p_value(pair.p)})"


def verdict(base: EvalScores, adapter: EvalScores) -> str:
    """The outcome on the held-out tasks in words.

    Where the eval stage compared base and adapter task by task, that comparison decides
    (:func:`paired_words`). A report from before it did falls back on the intervals: the adapter is better
    (or worse) only when the base rate lies outside the adapter's Wilson 95% interval ("better by 0.40 on 20
    held-out tasks (pass@1 0.20 → 0.60, 95% CI 0.39–0.78)"). Without pass@1 (the unit-test gate off) the val
    loss is compared, which has no interval and gets no verdict.
    """
    if adapter.val_paired is not None:
        return paired_words(adapter.val_paired)
    n = adapter.n_val
    tasks = f"{n} held-out task{'' if n == 1 else 's'}"
    if base.val_pass_at_1 is None or adapter.val_pass_at_1 is None or adapter.val_ci is None:
        if base.val_loss is None or adapter.val_loss is None:
            return f"no held-out pass@1 or val loss to compare on {tasks}"
        return (
            f"held-out val loss {num(base.val_loss, 3)} → {num(adapter.val_loss, 3)} on {tasks} "
            "(lower is better; no pass@1, so no interval and no verdict)"
        )
    low, high = adapter.val_ci
    change = adapter.val_pass_at_1 - base.val_pass_at_1
    figures = (
        f"(pass@1 {num(base.val_pass_at_1, 2)} → {num(adapter.val_pass_at_1, 2)}, "
        f"95% CI {low:.2f}{DASH}{high:.2f})"
    )
    if base.val_pass_at_1 < low:
        return f"better by {change:.2f} on {tasks} {figures}"
    if base.val_pass_at_1 > high:
        return f"worse by {-change:.2f} on {tasks} {figures}"
    return f"no measurable change on {tasks} {figures}"


def scores_of(sample: EvalSample) -> tuple[EvalScores, EvalScores]:
    return sample.base or EvalScores(), sample.adapter or EvalScores()


def _compact(latest: EvalSample, best_round: int | None) -> str:
    base, adapter = scores_of(latest)
    parts = [f"r{latest.round}"]
    pair = adapter.val_paired
    if pair is not None:  # the verdict says it all: the loss is left to the Eval view, to fit a narrow box
        counts, call = f"{pair.base_passed}/{pair.n}→{pair.adapter_passed}/{pair.n}", _call(pair)
        shown = _p_value(pair.p).replace(" ", "")
        parts.append(f"{counts} {call}" if call == "too few to tell" else f"{call} {counts} {shown}")
    elif adapter.val_pass_at_1 is not None:
        parts.append(f"pass@1 {num(base.val_pass_at_1, 2)}→{num(adapter.val_pass_at_1, 2)}")
    if adapter.val_loss is not None and pair is None:
        parts.append(f"loss {num(base.val_loss, 3)}→{num(adapter.val_loss, 3)}")
    if adapter.n_val == 0:
        parts.append("no held-out rows")
    parts.append(f"best r{best_round}" if best_round is not None else "no best yet")
    return " · ".join(parts)


def eval_line(evals: Sequence[EvalSample], best_round: int | None, *, compact: bool = False) -> str:
    """The latest round's outcome in one line: base → adapter on held-out pass@1 and val loss."""
    if not evals:
        return "no round evaluated yet"
    latest = evals[-1]
    if compact:
        return _compact(latest, best_round)
    base, adapter = scores_of(latest)
    parts = [f"round {latest.round}"]
    if adapter.val_paired is not None:
        parts.append(f"held-out: {paired_words(adapter.val_paired)}")
    elif adapter.val_pass_at_1 is not None or base.val_pass_at_1 is not None:
        parts.append(
            f"held-out pass@1 {num(base.val_pass_at_1, 2)} → {num(adapter.val_pass_at_1, 2)} "
            f"({signed(diff(adapter.val_pass_at_1, base.val_pass_at_1), 2)}, "
            f"{interval(adapter.val_ci, adapter.n_val)})"
        )
    if adapter.val_loss is not None or base.val_loss is not None:
        parts.append(
            f"val loss {num(base.val_loss, 3)} → {num(adapter.val_loss, 3)} "
            f"({signed(diff(adapter.val_loss, base.val_loss), 3)})"
        )
    if adapter.humaneval_paired is not None:
        parts.append(f"HumanEval: {paired_words(adapter.humaneval_paired, 'problem')}")
    elif adapter.humaneval_pass_at_1 is not None:
        parts.append(f"HumanEval {num(base.humaneval_pass_at_1, 2)} → {num(adapter.humaneval_pass_at_1, 2)}")
    if adapter.n_val == 0 and base.n_val == 0:
        parts.append("no held-out rows")
    parts.append(f"best round {best_round}" if best_round is not None else "no best round yet")
    return " · ".join(parts)
