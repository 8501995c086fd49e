"""What the eval stage concludes: rates with their intervals, the base scores kept for the run, the best round.

- :func:`wilson` is the Wilson score 95% interval of a pass rate: honest for the small ``n`` a held-out
  set has, where the normal approximation gives intervals outside [0, 1].
- :func:`paired` compares base and adapter task by task: both answer the same problems, so what tells a
  change from noise is how many tasks one solves that the other does not, weighed by McNemar's exact test
  (:func:`mcnemar_exact`). Two intervals that overlap can still hide a significant paired change.
- The base student is scored once per run on the held-out set (``eval/base.json``, with what it was
  measured on); later rounds reuse it while that set is unchanged.
- :func:`best_round`: the highest adapter held-out pass@1, ties broken by the lower held-out val loss,
  then the later round; when no round has a pass@1 (the unit-test gate off), the lowest held-out val
  loss. A round scored on no held-out rows never competes. :func:`record_best` writes
  ``best_adapter.json`` and the ``best_adapter`` link.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from heidi_engine.agents.layout import (
    adapter_dir,
    base_scores_file,
    best_adapter_file,
    best_adapter_link,
    eval_report,
    has_adapter,
)
from heidi_engine.bus.storage import atomic_write_json, ensure_private_dir, read_json

__all__ = [
    "MIN_TELLING",
    "Best",
    "Paired",
    "best_round",
    "load_base",
    "mcnemar_exact",
    "paired",
    "record_best",
    "reports",
    "save_base",
    "wilson",
]

_Z95 = 1.959963984540054


def wilson(passed: int, n: int, z: float = _Z95) -> tuple[float, float] | None:
    """The Wilson score interval of ``passed`` successes in ``n`` trials; None when ``n`` is 0."""
    if n < 0 or not 0 <= passed <= n:
        raise ValueError(f"need 0 <= passed <= n, got passed={passed}, n={n}")
    if n == 0:
        return None
    p = passed / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def mcnemar_exact(gained: int, lost: int) -> float:
    """The two-sided exact McNemar p-value of a paired pass/fail comparison.

    Only the tasks on which the two disagree count: ``gained`` (the adapter passes, the base fails) and
    ``lost`` (the reverse). If neither direction were likelier, each disagreement would be a fair coin,
    so p is twice the binomial tail at the rarer count (at most 1), computed exactly.
    """
    if gained < 0 or lost < 0:
        raise ValueError(f"need counts >= 0, got gained={gained}, lost={lost}")
    n = gained + lost
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(gained, lost) + 1))
    return min(1.0, 2 * tail / 2**n)


# The fewest disagreeing tasks that can reach p < 0.05: with 5, even 5 gained and none lost gives 0.0625.
MIN_TELLING = next(n for n in range(1, 64) if mcnemar_exact(n, 0) < 0.05)


@dataclass(frozen=True)
class Paired:
    """Base and adapter on the tasks both were scored on: how many each passed, how many changed, and p."""

    n: int
    base_passed: int
    adapter_passed: int
    gained: int
    lost: int
    p: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "base_passed": self.base_passed,
            "adapter_passed": self.adapter_passed,
            "gained": self.gained,
            "lost": self.lost,
            "p": self.p,
        }


def paired(base: Mapping[str, bool], adapter: Mapping[str, bool]) -> Paired | None:
    """Compare two ``{task: passed}`` maps on the tasks both hold; None when they share none."""
    common = [task for task in adapter if task in base]
    if not common:
        return None
    gained = sum(adapter[t] and not base[t] for t in common)
    lost = sum(base[t] and not adapter[t] for t in common)
    return Paired(
        n=len(common),
        base_passed=sum(bool(base[t]) for t in common),
        adapter_passed=sum(bool(adapter[t]) for t in common),
        gained=gained,
        lost=lost,
        p=mcnemar_exact(gained, lost),
    )


@dataclass(frozen=True)
class Best:
    """The best round so far and the adapter scores that made it best."""

    round: int
    val_pass_at_1: float | None
    val_loss: float | None


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def best_round(all_reports: Mapping[int, Mapping[str, Any]]) -> Best | None:
    """The best round of ``all_reports`` (see the module docstring), or None when no round competes."""
    candidates: list[Best] = []
    for round_no, report in all_reports.items():
        adapter = report.get("adapter")
        if not isinstance(adapter, Mapping) or not adapter.get("n_val"):
            continue  # scored on no held-out rows: a training row can never make a round best
        rate, loss = _number(adapter.get("val_pass_at_1")), _number(adapter.get("val_loss"))
        if rate is not None or loss is not None:
            candidates.append(Best(round_no, rate, loss))
    if any(c.val_pass_at_1 is not None for c in candidates):
        candidates = [c for c in candidates if c.val_pass_at_1 is not None]
    else:
        candidates = [c for c in candidates if c.val_loss is not None]
    if not candidates:
        return None

    def rank(c: Best) -> tuple[float, float, int]:
        rate = c.val_pass_at_1 if c.val_pass_at_1 is not None else 0.0
        loss = c.val_loss if c.val_loss is not None else math.inf
        return (rate, -loss, c.round)

    return max(candidates, key=rank)


def reports(run_dir: Path, up_to: int) -> dict[int, dict[str, Any]]:
    """The eval reports of rounds ``1..up_to`` whose adapter is still on disk."""
    found: dict[int, dict[str, Any]] = {}
    for round_no in range(1, up_to + 1):
        try:
            report = read_json(eval_report(run_dir, round_no))
        except (OSError, ValueError):
            continue
        if isinstance(report, dict) and has_adapter(adapter_dir(run_dir, round_no)):
            found[round_no] = report
    return found


def record_best(run_dir: Path, best: Best) -> None:
    """Write ``best_adapter.json`` and point the ``best_adapter`` link at ``out_lora_round_<round>``."""
    target = adapter_dir(run_dir, best.round).name
    atomic_write_json(
        best_adapter_file(run_dir),
        {
            "round": best.round,
            "adapter_dir": target,
            "val_pass_at_1": best.val_pass_at_1,
            "val_loss": best.val_loss,
        },
    )
    link = best_adapter_link(run_dir)
    temporary = link.with_name(f".{link.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        temporary.unlink()
    temporary.symlink_to(target)  # relative: the run folder can move
    os.replace(temporary, link)


def load_base(run_dir: Path, measured_on: Mapping[str, Any]) -> tuple[int, dict[str, Any]] | None:
    """``(round, scores)`` of the run's base scores when they were measured on ``measured_on``."""
    try:
        saved = read_json(base_scores_file(run_dir))
    except (OSError, ValueError):
        return None
    if not isinstance(saved, dict) or saved.get("measured_on") != dict(measured_on):
        return None
    scores, round_no = saved.get("scores"), saved.get("round")
    if not isinstance(scores, dict) or not isinstance(round_no, int):
        return None
    return round_no, scores


def save_base(
    run_dir: Path, round_no: int, measured_on: Mapping[str, Any], scores: Mapping[str, Any]
) -> None:
    """Keep the base scores of this run (``eval/base.json``) for the later rounds."""
    path = base_scores_file(run_dir)
    ensure_private_dir(path.parent)
    atomic_write_json(
        path,
        {"round": round_no, "measured_on": dict(measured_on), "scores": dict(scores)},
    )
