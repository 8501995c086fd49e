"""The reducer: counters, usage and cost, status, trainer history, bounded buffers."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from heidi_engine.bus.event import COUNTER_NAMES, Event
from heidi_engine.bus.state import (
    EXTERNAL_MAX,
    LOSS_HISTORY,
    RECENT_EVENTS,
    GpuInfo,
    HostInfo,
    RunState,
    StatusPatch,
    SystemSample,
    TrainerSample,
    apply_event,
    apply_sample,
    apply_status,
)

RUN = "run_20240215_123456_abc12345"


def ev(**fields: Any) -> Event:
    base: dict[str, Any] = {"run_id": RUN, "stage": "generate", "event_type": "progress", "round": 1}
    base.update(fields)
    return Event.model_validate(base)


def test_counters_are_sums_of_deltas() -> None:
    state = RunState()
    for i in range(10):
        apply_event(state, ev(counters_delta={"teacher_generated": 1, "test_pass": i % 2}))
    assert state.counters["teacher_generated"] == 10
    assert state.counters["test_pass"] == 5
    assert set(state.counters) == set(COUNTER_NAMES)
    assert state.event_count == 10 and state.run_id == RUN


def test_usage_and_cost_unknown_is_sticky() -> None:
    state = RunState()
    apply_event(state, ev(usage_delta={"requests_sent": 2, "input_tokens": 100, "estimated_cost_usd": 0.5}))
    apply_event(state, ev(usage_delta={"requests_sent": 1, "estimated_cost_usd": 0.25}))
    assert state.usage["requests_sent"] == 3 and state.usage["input_tokens"] == 100
    assert state.usage["estimated_cost_usd"] == 0.75
    apply_event(state, ev(usage_delta={"estimated_cost_usd": None}))
    apply_event(state, ev(usage_delta={"estimated_cost_usd": 1.0}))
    assert state.usage["estimated_cost_usd"] is None


def test_stage_and_status_transitions() -> None:
    state = RunState()
    apply_event(state, ev(stage="round_start", event_type="pipeline_start", round=0))
    assert state.status == "running" and state.started_at is not None
    apply_event(state, ev(stage="train", event_type="stage_start", round=2))
    assert state.current_stage == "train" and state.current_round == 2
    apply_event(state, ev(stage="train", event_type="progress", round=2))
    assert state.current_stage == "train"
    apply_event(state, ev(stage="round_end", event_type="pipeline_stop", level="error", error="boom"))
    assert state.status == "failed" and state.error == "boom"
    apply_event(state, ev(stage="round_end", event_type="pipeline_stop", level="warn"))
    assert state.status == "stopped"
    apply_event(state, ev(stage="round_end", event_type="pipeline_complete", level="success"))
    assert state.status == "completed"


def test_recent_events_bounded() -> None:
    state = RunState()
    for i in range(RECENT_EVENTS + 50):
        apply_event(state, ev(message=f"m{i}"))
    assert len(state.recent_events) == RECENT_EVENTS
    assert state.recent_events[-1]["message"] == f"m{RECENT_EVENTS + 49}"
    assert state.event_count == RECENT_EVENTS + 50


def test_trainer_history_truncated_on_resume_not_duplicated() -> None:
    state = RunState()
    for step in range(1, 11):
        apply_sample(state, TrainerSample(round=1, step=step, total=20, loss=1.0 / step))
    for step in range(7, 13):  # resumed from the checkpoint at step 6
        apply_sample(state, TrainerSample(round=1, step=step, total=20, loss=2.0))
    steps = [s for s, _ in state.trainer.loss_history]
    assert steps == list(range(1, 13))
    assert state.trainer.step == 12 and state.trainer.loss == 2.0


def test_trainer_history_spans_the_whole_run_thinned_and_bounded() -> None:
    state = RunState()
    for step in range(1, 3 * LOSS_HISTORY + 1):
        apply_sample(state, TrainerSample(round=1, step=step, total=10_000, loss=1.0))
    history = state.trainer.loss_history
    assert len(history) <= LOSS_HISTORY and history[0][0] == 1 and history[-1][0] > 3 * LOSS_HISTORY - 10
    gaps = {b[0] - a[0] for a, b in itertools.pairwise(history)}
    assert gaps <= {state.trainer.history_stride, state.trainer.history_stride // 2}  # evenly thinned
    # Round 2 continues the run's step axis; round 1's curve stays.
    apply_sample(state, TrainerSample(round=2, step=1, total=10, loss=0.9))
    assert state.trainer.round_starts == {1: 0, 2: 3 * LOSS_HISTORY}
    assert state.trainer.loss_history[-1] == (3 * LOSS_HISTORY + 1, 0.9) and history[0][0] == 1


def test_system_sample_and_gpu_summary() -> None:
    state = RunState()
    assert state.gpu_summary() == {"vram_used_mb": None, "vram_total_mb": None, "util_pct": None}
    apply_sample(state, SystemSample(
        gpus=[GpuInfo(index=0, vram_used_mb=1000, vram_total_mb=8000, util_pct=50),
              GpuInfo(index=1, vram_used_mb=3000, vram_total_mb=8000, util_pct=None)],
        host=HostInfo(cpu_pct=10, ram_used_mb=1, ram_total_mb=2)))
    assert state.gpu_summary() == {"vram_used_mb": 4000.0, "vram_total_mb": 16000.0, "util_pct": 50.0}


def test_status_patch_applies_only_set_fields() -> None:
    state = RunState(run_id=RUN, status="running", total_rounds=3)
    apply_status(state, StatusPatch(pause_requested=True))
    assert state.pause_requested and state.status == "running" and state.total_rounds == 3
    apply_status(state, StatusPatch(status="paused", error=None))
    assert state.status == "paused" and state.error is None


def test_state_round_trips_through_json() -> None:
    state = RunState()
    apply_event(state, ev(counters_delta={"validated_ok": 3}))
    apply_sample(state, TrainerSample(round=1, step=1, total=2, loss=0.1))
    again = RunState.model_validate_json(state.model_dump_json())
    assert again == state


def test_an_external_trainer_is_shown_as_itself_and_moves_none_of_the_runs_figures() -> None:
    state = RunState(run_id=RUN, status="running")
    apply_event(state, ev(round=2, stage="train", counters_delta={"train_step": 3}))
    apply_sample(state, TrainerSample(round=2, step=3, total=9, loss=0.5))
    apply_event(state, ev(round=1, stage="external", level="error", event_type="error", message="x: boom"))
    apply_sample(state, TrainerSample(round=1, step=40, total=60, loss=2.0, source="external:x"))
    assert (state.current_round, state.error, state.counters["train_step"]) == (2, None, 3)
    assert (state.trainer.step, state.trainer.total, state.trainer.loss) == (3, 9, 0.5)
    assert state.external["external:x"].step == 40 and state.recent_events[-1]["message"] == "x: boom"
    for i in range(EXTERNAL_MAX + 2):  # the latest few are kept, by when each was last heard
        apply_sample(state, TrainerSample(round=1, step=i, total=60, source=f"external:s{i}"))
    assert len(state.external) == EXTERNAL_MAX and f"external:s{EXTERNAL_MAX + 1}" in state.external
    assert "external:x" not in state.external


def test_a_trainer_source_is_external_or_nothing() -> None:
    for bad in ("train", "external:", "external:../x", "external:" + "a" * 65):
        with pytest.raises(ValueError):
            TrainerSample(step=1, total=1, source=bad)
