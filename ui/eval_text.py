"""The eval outcome as plain text: the one line the Overview, ``--status`` and the Eval view show.

Rates are held-out pass@1 (the held-out tasks' own unit tests) and HumanEval pass@1, each as
base → adapter; intervals are the adapter's Wilson 95% interval with its ``n``.
"""

from __future__ import annotations

from collections.abc import Sequence

from heidi_engine.bus.state import EvalSample, EvalScores

__all__ = ["diff", "eval_line", "interval", "num", "scores_of", "signed"]

DASH = "–"


def num(value: float | None, digits: int) -> str:
    return DASH if value is None else f"{value:.{digits}f}"


def signed(value: float | None, digits: int) -> str:
    return DASH if value is None else f"{value:+.{digits}f}"


def diff(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def interval(ci: tuple[float, float] | None, n: int) -> str:
    return f"[{ci[0]:.2f}–{ci[1]:.2f}] n={n}" if ci is not None else f"n={n}"


def scores_of(sample: EvalSample) -> tuple[EvalScores, EvalScores]:
    return sample.base or EvalScores(), sample.adapter or EvalScores()


def _compact(latest: EvalSample, best_round: int | None) -> str:
    base, adapter = scores_of(latest)
    parts = [f"r{latest.round}"]
    if adapter.val_pass_at_1 is not None:
        parts.append(f"pass@1 {num(base.val_pass_at_1, 2)}→{num(adapter.val_pass_at_1, 2)}")
    if adapter.val_loss is not None:
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
    if adapter.val_pass_at_1 is not None or base.val_pass_at_1 is not None:
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
    if adapter.humaneval_pass_at_1 is not None:
        parts.append(f"HumanEval {num(base.humaneval_pass_at_1, 2)} → {num(adapter.humaneval_pass_at_1, 2)}")
    if adapter.n_val == 0 and base.n_val == 0:
        parts.append("no held-out rows")
    parts.append(f"best round {best_round}" if best_round is not None else "no best round yet")
    return " · ".join(parts)
