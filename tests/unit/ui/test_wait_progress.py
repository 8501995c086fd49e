"""``--wait``'s progress inside a stage: samples with an ETA from the rate, the trainer's steps and ETA."""

from __future__ import annotations

from heidi_engine.ui.menu.follow import StageProgress


def _generating(written: int) -> dict[str, object]:
    message = f"generate round 2: {written}/100 written, 5 failed"
    return {"current_stage": "generate", "current_round": 2,
            "recent_events": [{"stage": "generate", "round": 2, "event_type": "progress", "message": message}]}  # fmt: skip


def test_generate_counts_this_rounds_samples_with_an_eta_from_the_rate() -> None:
    progress = StageProgress()
    assert progress.detail(_generating(5), now=10.0) == "sample 10/100"  # the round's own event: written + failed
    assert progress.detail(_generating(25), now=20.0) == "sample 30/100 · ETA 35s"  # 2 per second, 70 left
    assert progress.detail({"current_stage": "generate", "current_round": 1}, now=30.0) is None  # no event yet
    parked = {**_generating(35), "teacher_outage": {"since": "2024-02-15T12:35:00Z", "retry_every_s": 30.0}}
    assert progress.detail(parked, now=30.0) == "sample 40/100 · teacher unreachable since 2024-02-15T12:35:00Z"


def test_train_shows_steps_and_the_trainers_eta_and_eval_its_problems() -> None:
    progress = StageProgress()
    trainer = {"round": 1, "step": 40, "total": 100, "eta_s": 130.0}
    state = {"current_stage": "train", "current_round": 1, "trainer": trainer}
    assert progress.detail(state, now=0.0) == "step 40/100 · ETA 2m 10s"
    early = {**state, "trainer": {**trainer, "step": 2}}
    assert progress.detail(early, now=0.0) == "step 2/100"  # no ETA from fewer than three steps
    assert progress.detail({"current_stage": "train", "trainer": {"step": 0, "total": 0}}, now=0.0) is None
    tested = "eval round 1: tested 7/10 answers, 5 passed"
    evaluating = {"current_stage": "eval", "current_round": 1,
                  "recent_events": [{"stage": "eval", "round": 1, "event_type": "progress", "message": tested}]}  # fmt: skip
    assert progress.detail(evaluating, now=0.0) == "tested 7/10 answers, 5 passed"
