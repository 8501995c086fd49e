"""Builders the UI unit tests share: a busy run state, its events and dashboard frames rendered to
text, and a viewer's view of a state (for the HTTP and Prometheus views)."""

from __future__ import annotations

import io
from datetime import datetime, timezone
from typing import Any

from rich.console import Console

from heidi_engine.bus.state import AgentInfo, GpuInfo, HostInfo, RunState, TrainerState
from heidi_engine.ui.dashboard.frame import Frame, Link, Rates
from heidi_engine.ui.dashboard.screen import render
from heidi_engine.ui.viewer import View

NOW = datetime(2024, 2, 15, 12, 40, 0, tzinfo=timezone.utc)
RUN_ID = "run_20240215_123456_deadbeef"
SECRET = "sk-proj-Zq8aLmN3pQ7rS2tU9vW4xY6z"


def make_state(**changes: Any) -> RunState:
    state = RunState(
        run_id=RUN_ID,
        status="running",
        current_round=2,
        total_rounds=3,
        current_stage="train",
        started_at="2024-02-15T12:34:56.000Z",
        updated_at="2024-02-15T12:39:00.000Z",
        counters={
            "teacher_generated": 120,
            "teacher_failed": 3,
            "validated_ok": 100,
            "rejected_schema": 10,
            "rejected_secret": 1,
            "rejected_dedup": 9,
            "test_pass": 80,
            "test_fail": 20,
            "train_step": 150,
            "eval_pass": 7,
            "eval_total": 20,
        },
        usage={
            "requests_sent": 123,
            "input_tokens": 45678,
            "output_tokens": 23456,
            "rate_limits_hit": 2,
            "retries": 4,
            "estimated_cost_usd": 0.0123,
        },
        trainer=TrainerState(
            round=2,
            step=150,
            total=500,
            loss=0.53,
            learning_rate=2e-4,
            grad_norm=1.25,
            tokens_per_s=850.0,
            loss_history=[(i, 2.0 / (1 + i / 20)) for i in range(1, 151)],
        ),
        host=HostInfo(cpu_pct=35.0, ram_used_mb=6144.0, ram_total_mb=16384.0),
        gpu_message="no GPU: NVML Shared Library Not Found; showing host CPU/RAM",
        agents={"train": AgentInfo(stage="train", pid=1234, pgid=1234, phase="running")},
        config={
            "BASE_MODEL": "smollm2-135m-instruct",
            "TEACHER_MODEL": "gpt-4o-mini",
            "ROUNDS": 3,
            "MAX_COST_USD": None,
        },
    )
    for name, value in changes.items():
        setattr(state, name, value)
    return state


def make_events(count: int, **fields: Any) -> tuple[dict[str, Any], ...]:
    levels = ("info", "warn", "error", "success")
    return tuple(
        {
            "ts": f"2024-02-15T12:35:{i % 60:02d}.{i % 1000:03d}Z",
            "round": 1,
            "stage": "generate" if i % 2 else "validate",
            "level": levels[i % 4],
            "event_type": "progress",
            "message": f"item {i}",
            **fields,
        }
        for i in range(count)
    )


def make_frame(state: RunState | None = None, **changes: Any) -> Frame:
    base: dict[str, Any] = {
        "state": state or make_state(),
        "link": Link("live", True, 0.2, None, 1234),
        "now": NOW,
        "events": make_events(300),
        "rates": Rates(
            requests_s=2.5,
            input_tokens_s=300.0,
            output_tokens_s=120.0,
            generated_s=2.4,
            train_steps_s=0.8,
            events_s=10.0,
        ),
    }
    base.update(changes)
    return Frame(**base)


def screen(frame: Frame, width: int = 100, height: int | None = None) -> str:
    console = Console(width=width, height=height or 25, record=True, color_system=None, file=io.StringIO())
    console.print(render(frame, width, height))
    return console.export_text()


def view(state: RunState | None = None, *, connected: bool = True, silence_s: float | None = 0.2) -> View:
    return View(state=state or RunState(), seq=1, connected=connected, silence_s=silence_s, error=None)


def busy_state() -> RunState:
    state = RunState(
        run_id="run_20240215_123456_abc12345", status="running", current_round=2, total_rounds=3,
        current_stage="train", pause_requested=True, last_event_ts="2024-02-15T12:34:56.789Z",
        updated_at="2024-02-15T12:34:57.000Z", event_count=42,
        gpus=[GpuInfo(index=0, name='A100 "80GB"', vram_used_mb=2048, vram_total_mb=81920, util_pct=45.0),
              GpuInfo(index=1, name="A100", vram_used_mb=1024, vram_total_mb=81920, util_pct=None)],
        host=HostInfo(cpu_pct=12.5, ram_used_mb=4000, ram_total_mb=16000),
        trainer=TrainerState(round=2, step=7, total=50, loss=0.75, learning_rate=2e-4, tokens_per_s=512.0),
        config={"TEACHER_BASE_URL": "https://u:p@x"}, error="boom", recent_events=[{"message": "hi"}],
    )  # fmt: skip
    state.counters["teacher_generated"] = 12
    state.usage["requests_sent"] = 5
    state.usage["estimated_cost_usd"] = 0.125
    return state
