"""What the eval stage concludes: rates with their intervals, the base scores kept for the run, the best round.

- :func:`wilson` is the Wilson score 95% interval of a pass rate: honest for the small ``n`` a held-out
  set has, where the normal approximation gives intervals outside [0, 1].
- :func:`paired` compares base and adapter task by task: both answer the same problems, so what tells a
  change from noise is how many tasks one solves that the other does not, weighed by McNemar's exact test
  (:mod:`heidi_engine.bus.paired`).
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
from typing import Any, NamedTuple

from heidi_engine.agents.layout import (
    adapter_dir,
    base_scores_file,
    best_adapter_file,
    best_adapter_link,
    eval_report,
    has_adapter,
)
from heidi_engine.bus.paired import PairedScores, mcnemar_exact
from heidi_engine.bus.storage import atomic_write_json, ensure_private_dir, read_json

__all__ = [
    "Best",
    "SavedBase",
    "best_round",
    "load_base",
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


def paired(base: Mapping[str, bool], adapter: Mapping[str, bool]) -> PairedScores | None:
    """Compare two ``{task: passed}`` maps on the tasks both hold; None when they share none."""
    common = [task for task in adapter if task in base]
    if not common:
        return None
    gained = sum(bool(adapter[t]) and not base[t] for t in common)
    lost = sum(bool(base[t]) and not adapter[t] for t in common)
    return PairedScores(
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


class SavedBase(NamedTuple):
    """The run's base scores: the round that measured them, the scores, and each task's outcome per kind."""

    round: int
    scores: dict[str, Any]
    outcomes: dict[str, dict[str, bool]]


def load_base(run_dir: Path, measured_on: Mapping[str, Any]) -> SavedBase | None:
    """The run's base scores when they were measured on ``measured_on``; a file saved before outcomes were
    kept gives none (the paired comparison is then left out, never guessed)."""
    try:
        saved = read_json(base_scores_file(run_dir))
    except (OSError, ValueError):
        return None
    if not isinstance(saved, dict) or saved.get("measured_on") != dict(measured_on):
        return None
    scores, round_no, found = saved.get("scores"), saved.get("round"), saved.get("outcomes")
    if not isinstance(scores, dict) or not isinstance(round_no, int):
        return None
    kept = {
        kind: {task: passed for task, passed in tasks.items() if isinstance(passed, bool)}
        for kind, tasks in (found.items() if isinstance(found, dict) else ())
        if isinstance(tasks, dict)
    }
    return SavedBase(round_no, scores, kept)


def save_base(
    run_dir: Path,
    round_no: int,
    measured_on: Mapping[str, Any],
    scores: Mapping[str, Any],
    outcomes: Mapping[str, Mapping[str, bool]],
) -> None:
    """Keep the base scores of this run and each task's outcome (``eval/base.json``) for the later rounds."""
    path = base_scores_file(run_dir)
    ensure_private_dir(path.parent)
    atomic_write_json(
        path,
        {
            "round": round_no,
            "measured_on": dict(measured_on),
            "scores": dict(scores),
            "outcomes": {kind: dict(tasks) for kind, tasks in outcomes.items()},
        },
    )
