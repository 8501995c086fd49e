"""Issue 28, points 5 and 12 on the agents' side: eval says how far it got, generate's totals name the
held-out answers, a round about to train on one or two rows says so."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from heidi_engine.agents.evaluation.progress import EVERY_S, EvalProgress
from heidi_engine.agents.generate import _Generation
from heidi_engine.agents.train import small_set_warning
from heidi_engine.ui.menu.follow import StageProgress


def _follow(stage: str, message: str) -> str | None:
    """What ``--wait`` makes of ``message`` as the stage's latest progress event."""
    event = {"stage": stage, "round": 1, "event_type": "progress", "message": message}
    return StageProgress().detail({"current_stage": stage, "current_round": 1, "recent_events": [event]}, now=0.0)


def test_eval_reports_each_batch_and_the_answers_tested_at_most_every_two_seconds() -> None:
    sent: list[str] = []
    clock = SimpleNamespace(now=0.0)
    report = EvalProgress(sent.append, 1, clock=lambda: clock.now)
    for done in (0, 8, 16):
        report.generated(done, 24)
        clock.now += EVERY_S  # a batch of a real model: each one said
    report.generated(24, 24)
    for done in range(41):
        report.tested(done, 40, done // 2)
        clock.now += 0.1  # fast tests: at most one event every two seconds, and always the last
    assert sent[:4] == [f"eval round 1: generated {n}/24 answers" for n in (0, 8, 16, 24)]
    assert sent[4] == "eval round 1: tested 0/40 answers, 0 passed"
    assert sent[-1] == "eval round 1: tested 40/40 answers, 20 passed"
    assert len(sent) == 4 + 3  # tested: the first, one after 2 s, and the last (4 s in all)
    assert _follow("eval", sent[-1]) == "tested 40/40 answers, 20 passed"
    assert _follow("eval", sent[1]) == "generated 8/24 answers"


def test_generate_progress_counts_the_held_out_answers_and_says_so() -> None:
    sent: list[str] = []
    run: Any = SimpleNamespace(rt=SimpleNamespace(round=1, progress=lambda message, **_: sent.append(message)),
                               done={f"r1-{i:05d}" for i in range(5)}, failed=set(), total=12, heldout=4)  # fmt: skip
    run.incl = lambda: _Generation.incl(run)
    batch = SimpleNamespace(notes=(), speed="", warn=False, counters={}, usage={})
    _Generation._progress(run, batch)  # type: ignore[arg-type]
    assert sent == ["generate round 1: 5/12 written (incl. 4 held-out answers), 0 failed"]
    assert _follow("generate", sent[0]) == "sample 5/12 (incl. 4 held-out)"


def test_a_round_on_one_or_two_rows_is_warned_with_why() -> None:
    counted = {"validated_ok": 2, "rejected_schema": 3, "test_fail": 3}
    warning = small_set_warning(2, 1, counted)
    assert warning is not None
    assert "only 2 row(s)" in warning and "3 malformed, 3 failing their tests" in warning
    assert "logs/validate_round_1.log" in warning
    assert "few samples" in (small_set_warning(1, 2, {}) or "")
    assert small_set_warning(3, 1, counted) is None and small_set_warning(0, 1, counted) is None
