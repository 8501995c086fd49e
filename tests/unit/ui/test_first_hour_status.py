"""The menu's --status and --list, as a new user reads them: what a pending pause waits for, the eval
outcome in words, and a run's start time whole."""

from __future__ import annotations

from heidi_engine.bus.paired import PairedScores, mcnemar_exact
from heidi_engine.bus.state import EvalSample, EvalScores
from heidi_engine.ui.status_view import format_runs, format_status

RUN = "run_20240215_123456_abc12345"


def _status(**fields: object) -> dict[str, object]:
    return {"run_id": RUN, "status": "running", "pid": 1, "uptime_s": 3.0, **fields}


def test_a_pending_pause_says_what_it_waits_for_until_it_lands() -> None:
    hint = "pausing after the current teacher batch, ~50 s"
    assert f"pause       {hint}" in format_status(_status(pause_requested=True, pause_hint=hint))
    assert hint not in format_status(_status(status="paused", pause_requested=True, pause_hint=hint))
    assert "pause " not in format_status(_status(pause_hint=hint))


def test_the_eval_outcome_has_a_verdict_in_words_with_its_interval() -> None:
    base = EvalScores(n_val=4, val_pass_at_1=0.25, val_ci=(0.05, 0.70), val_loss=1.5)
    adapter = EvalScores(n_val=4, val_pass_at_1=0.25, val_ci=(0.05, 0.70), val_loss=1.4)
    sample = EvalSample(round=1, base=base, adapter=adapter).model_dump(mode="json")
    text = format_status(_status(evals=[sample], best_round=1))
    assert "verdict     no measurable change on 4 held-out tasks (pass@1 0.25 → 0.25, 95% CI 0.05–0.70)" in text, text


def test_a_paired_outcome_is_said_once_on_the_eval_line() -> None:
    pair = PairedScores(n=25, base_passed=9, adapter_passed=16, gained=7, lost=0, p=mcnemar_exact(7, 0))
    base = EvalScores(n_val=25, val_pass_at_1=0.36, val_passed=9, val_loss=0.9)
    adapter = base.model_copy(update={"val_pass_at_1": 0.64, "val_passed": 16, "val_paired": pair})
    sample = EvalSample(round=1, base=base, adapter=adapter).model_dump(mode="json")
    text = format_status(_status(evals=[sample], best_round=1))
    words = "better on 25 held-out tasks: 9/25 → 16/25 (7 gained, 0 lost, p = 0.016)"
    assert f"eval        round 1 · held-out: {words}" in text, text
    assert text.count(words) == 1 and "verdict" not in text, text


def test_list_shows_when_a_run_started_to_the_second() -> None:
    line = format_runs([{"run_id": RUN, "status": "completed", "rounds_done": 1, "total_rounds": 1,
                         "started_at": "2024-02-15T12:34:56.789Z", "duration_s": 257.6}]).splitlines()[1]  # fmt: skip
    assert "2024-02-15T12:34:56Z" in line and "4m17s" in line, line
