"""``--wait``'s progress inside a stage: samples with an ETA from the rate, the trainer's steps and ETA."""

from __future__ import annotations

from heidi_engine.ui.menu.follow import StageProgress


def _generating(asked: int) -> dict[str, object]:
    return {"current_stage": "generate", "current_round": 2, "config": {"SAMPLES_PER_ROUND": 100},
            "counters": {"teacher_generated": asked - 5, "teacher_failed": 5}}  # fmt: skip


def test_generate_counts_this_rounds_samples_with_an_eta_from_the_rate() -> None:
    progress = StageProgress()
    assert progress.detail(_generating(110), now=10.0) == "sample 10/100"  # round 1 asked 100 already
    assert progress.detail(_generating(130), now=20.0) == "sample 30/100 · ETA 35s"  # 2 per second, 70 left
    assert progress.detail({"current_stage": "generate", "current_round": 1}, now=30.0) is None  # no config
    parked = {**_generating(140), "teacher_outage": {"since": "2024-02-15T12:35:00Z", "retry_every_s": 30.0}}
    assert progress.detail(parked, now=30.0) == "sample 40/100 · teacher unreachable since 2024-02-15T12:35:00Z"


def test_train_shows_steps_and_the_trainers_eta_and_eval_its_problems() -> None:
    progress = StageProgress()
    state = {"current_stage": "train", "current_round": 1, "trainer": {"step": 40, "total": 100, "eta_s": 130.0}}
    assert progress.detail(state, now=0.0) == "step 40/100 · ETA 2m 10s"
    assert progress.detail({"current_stage": "train", "trainer": {"step": 0, "total": 0}}, now=0.0) is None
    evaluating = {"current_stage": "eval", "counters": {"eval_total": 7, "eval_pass": 5}}
    assert progress.detail(evaluating, now=0.0) == "7 problems run, 5 passed"
