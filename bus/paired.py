"""The adapter against the base, task by task: McNemar's exact test and what viewers are told of it.

Base and adapter answer the same tasks, so what tells a change from noise is how many tasks one solves that
the other does not. Each such disagreement is, if neither model were better, a fair coin between "gained"
and "lost"; McNemar's exact test asks how unlikely a split at least as uneven as the one seen would be. Two
Wilson intervals that overlap can hide a paired change this test finds, and one that a handful of tasks
cannot show: with fewer than :data:`TELLING_TASKS` disagreements no split reaches p < 0.05.

The eval stage computes it (:func:`heidi_engine.agents.evaluation.outcome.paired`); the ``eval`` sample
carries it to every viewer as a :class:`PairedScores`, where :func:`heidi_engine.ui.eval_text.verdict`
puts it in words. It lives in ``bus`` because both sides need it and ``bus`` is what both may import.
"""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["SIGNIFICANCE", "TELLING_TASKS", "PairedScores", "mcnemar_exact"]

SIGNIFICANCE = 0.05


def mcnemar_exact(gained: int, lost: int) -> float:
    """The two-sided exact McNemar p-value of ``gained`` tasks against ``lost`` ones: twice the binomial
    tail (p = ½) at the rarer count, at most 1, computed exactly; 1.0 when nothing changed."""
    if gained < 0 or lost < 0:
        raise ValueError(f"need counts >= 0, got gained={gained}, lost={lost}")
    n = gained + lost
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(gained, lost) + 1))
    return min(1.0, 2 * tail / (1 << n))


# The fewest changed tasks that can reach significance: 5 gained and none lost still give p = 0.0625.
TELLING_TASKS = next(n for n in range(1, 64) if mcnemar_exact(n, 0) < SIGNIFICANCE)


class PairedScores(BaseModel):
    """The adapter against the base on the ``n`` tasks both answered: passes of each, tasks ``gained`` (the
    adapter passes, the base fails) and ``lost`` (the reverse), and McNemar's exact two-sided ``p``."""

    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    n: int = Field(ge=0, le=1_000_000)
    base_passed: int = Field(ge=0, le=1_000_000)
    adapter_passed: int = Field(ge=0, le=1_000_000)
    gained: int = Field(ge=0, le=1_000_000)
    lost: int = Field(ge=0, le=1_000_000)
    p: float = Field(ge=0.0, le=1.0)

    @property
    def significant(self) -> bool:
        return self.p < SIGNIFICANCE
