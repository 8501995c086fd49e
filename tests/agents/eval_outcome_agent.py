"""A stand-in eval stage: reports a made-up but plausible outcome for each round, with no model.

Round N's adapter gets held-out pass@1 ``min(1, 0.25 * N)`` on four tasks and val loss ``2.0 - 0.25 * N``
against a base of 0.25 and 2.0 (scored in round 1), so later rounds are better and the best round is
the last. Task by task, the base passes the first of the four and the adapter the first N, so round N
gained N - 1 tasks and lost none (too few tasks for the paired test to tell). It publishes the outcome as
the real eval stage does (an ``eval`` sample).
"""

from __future__ import annotations

import sys

from heidi_engine.agents.evaluation.outcome import paired, wilson
from heidi_engine.agents.runtime import AgentRuntime, run_stage
from heidi_engine.bus.state import EvalSample, EvalScores

TASKS = [f"bank/task_{n}" for n in range(4)]


def scores(passed: int, loss: float, base_passed: int | None = None) -> EvalScores:
    pair = None
    if base_passed is not None:
        pair = paired({t: i < base_passed for i, t in enumerate(TASKS)}, {t: i < passed for i, t in enumerate(TASKS)})
    return EvalScores(
        val_loss=loss, n_val=4, val_pass_at_1=passed / 4, val_passed=passed, val_ci=wilson(passed, 4),
        humaneval_pass_at_1=0.0, n_humaneval=2, humaneval_ci=wilson(0, 2), val_paired=pair,
    )  # fmt: skip


def main(rt: AgentRuntime) -> None:
    adapter = scores(min(4, rt.round), 2.0 - 0.25 * rt.round, base_passed=1)
    rt.sample(EvalSample(round=rt.round, base=scores(1, 2.0), adapter=adapter, base_round=1, best_round=rt.round))
    rt.progress(f"round {rt.round} eval: adapter pass@1 {adapter.val_pass_at_1}", counters={"eval_total": 4})


if __name__ == "__main__":
    sys.exit(run_stage(main))
