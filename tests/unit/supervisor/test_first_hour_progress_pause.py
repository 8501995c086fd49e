"""Issue 28, point 6: a requested pause says what it waits for, with an estimate where the state has one."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from heidi_engine.bus.state import RunState, TrainerState
from heidi_engine.supervisor.facade import pause_hint

NOW = datetime(2024, 2, 15, 12, 0, 0, tzinfo=timezone.utc)


def _ts(seconds_ago: float) -> str:
    return (NOW - timedelta(seconds=seconds_ago)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def test_generate_waits_for_the_current_teacher_batch_about_as_long_as_batches_take() -> None:
    events = [{"stage": "generate", "round": 1, "event_type": "progress", "ts": _ts(ago)} for ago in (190, 130, 70, 10)]
    state = RunState(status="running", current_stage="generate", current_round=1, recent_events=events)
    assert pause_hint(state, NOW) == "pausing after the current teacher batch, ~50 s"  # a batch a minute


def test_train_waits_for_the_current_step_and_eval_for_its_batch() -> None:
    trainer = TrainerState(round=1, step=10, total=20, eta_s=50.0)
    state = RunState(status="running", current_stage="train", current_round=1, trainer=trainer)
    assert pause_hint(state, NOW) == "pausing after the current training step, ~5 s"
    state = RunState(status="running", current_stage="eval", current_round=1)
    assert pause_hint(state, NOW) == "pausing after the current eval batch"  # no pace known yet
    assert pause_hint(RunState(status="running"), NOW) == "pausing before the next stage starts"
