"""Render one dashboard frame of a realistic mid-run state to an SVG, for the README.

The state is built with the same reducer the supervisor uses (events and samples folded into a
``RunState``), at fixed times, so the picture is reproducible. Run from the repository root:
``python scripts/export_dashboard_svg.py [--view 1-5] [--out docs/dashboard.svg] [--width 120 --height 40]``.
"""

from __future__ import annotations

import argparse
import io
import math
from datetime import datetime, timedelta, timezone
from pathlib import Path

from rich.console import Console

from heidi_engine.bus.event import Event
from heidi_engine.bus.state import (
    AgentInfo,
    GpuInfo,
    HostInfo,
    RunState,
    SystemSample,
    TrainerSample,
    apply_event,
    apply_sample,
)
from heidi_engine.ui.dashboard.frame import VIEWS, Frame, Link, Rates
from heidi_engine.ui.dashboard.screen import render

RUN_ID = "run_20250301_091500_3f9c2a71"
START = datetime(2025, 3, 1, 9, 15, 0, tzinfo=timezone.utc)
ROOT = Path(__file__).resolve().parents[1]


def _ts(seconds: float) -> str:
    return (START + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _event(at: float, stage: str, kind: str, message: str, **fields: object) -> Event:
    return Event.model_validate(
        {
            "ts": _ts(at),
            "run_id": RUN_ID,
            "round": 2,
            "stage": stage,
            "event_type": kind,
            "message": message,
            **fields,
        }
    )


def demo_state() -> RunState:
    """Round 2 of 3 of a GPU run, a third of the way through training."""
    state = RunState(
        run_id=RUN_ID,
        total_rounds=3,
        status="running",
        config={
            "BASE_MODEL": "mistralai/Mistral-7B-Instruct-v0.2",
            "TEACHER_MODEL": "gpt-4o-mini",
            "SAMPLES_PER_ROUND": 200,
            "ROUNDS": 3,
            "TRAIN_STEPS": 300,
            "LORA_R": 64,
            "RUN_UNIT_TESTS": "1",
            "TEACHER_BASE_URL": "https://api.openai.com/v1",
            "TEACHER_API_KEY_ENV": "OPENAI_API_KEY",
            "TEACHER_CONCURRENCY": 8,
            "MAX_COST_USD": 5.0,
        },
        agents={"train": AgentInfo(stage="train", pid=48213, pgid=48213, phase="running")},
    )
    events = [
        _event(-900, "round_start", "pipeline_start", "run started: 3 rounds", round=0),
        _event(0, "round_start", "stage_start", "round 2 of 3"),
    ]
    events.append(_event(1, "generate", "stage_start", "generating 200 samples with gpt-4o-mini"))
    for i in range(40):
        events.append(
            _event(
                2 + i * 4,
                "generate",
                "progress",
                f"batch {i + 1}/40: 5 samples",
                counters_delta={"teacher_generated": 5},
                usage_delta={
                    "requests_sent": 5,
                    "input_tokens": 2310,
                    "output_tokens": 1544,
                    "estimated_cost_usd": 0.00127,
                },
            )
        )
    events.append(
        _event(
            150,
            "generate",
            "progress",
            "rate limited (429); retrying after 2.0 s",
            level="warn",
            usage_delta={"rate_limits_hit": 1, "retries": 1},
        )
    )
    events.append(_event(163, "generate", "stage_end", "200 samples in 2m 42s", level="success"))
    events.append(_event(164, "validate", "stage_start", "schema, secret scan, dedup, unit tests"))
    events.append(
        _event(
            170,
            "validate",
            "progress",
            "rejected 3 samples that failed their unit tests",
            level="warn",
            counters_delta={"test_fail": 3},
        )
    )
    events.append(
        _event(
            178,
            "validate",
            "stage_end",
            "178 clean samples (89.0%)",
            level="success",
            counters_delta={
                "validated_ok": 178,
                "rejected_schema": 9,
                "rejected_secret": 2,
                "rejected_dedup": 11,
                "test_pass": 175,
            },
        )
    )
    events.append(_event(180, "train", "stage_start", "LoRA r=64 on 160 train / 18 val samples"))
    for step in range(10, 101, 10):
        events.append(
            _event(
                180 + step * 2.4, "train", "progress", f"step {step}/300", counters_delta={"train_step": 10}
            )
        )
    for event in sorted(events, key=lambda e: e.ts):
        apply_event(state, event)
    for step in range(1, 101):
        loss = 0.55 + 1.6 * math.exp(-step / 22) + 0.04 * math.sin(step / 3)
        apply_sample(
            state,
            TrainerSample(
                round=2,
                step=step,
                total=300,
                loss=round(loss, 4),
                learning_rate=2e-4 * (1 - step / 300),
                grad_norm=0.8 + 0.3 * math.cos(step / 5),
                tokens_per_s=2150.0,
                samples_per_s=4.2,
                eta_s=(300 - step) * 2.4,
                memory_mb=17_800.0,
            ),
        )
    apply_sample(
        state,
        SystemSample(
            gpus=[
                GpuInfo(
                    index=0,
                    name="NVIDIA A10G",
                    vram_used_mb=18_431,
                    vram_total_mb=23_028,
                    util_pct=94,
                    temperature_c=71,
                    power_w=262,
                )
            ],
            host=HostInfo(cpu_pct=41.0, ram_used_mb=21_504, ram_total_mb=63_488),
        ),
    )
    return state


def main() -> None:
    parser = argparse.ArgumentParser(description="export one dashboard frame as SVG")
    parser.add_argument("--view", type=int, default=1, choices=range(1, len(VIEWS) + 1), metavar="1-5")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "dashboard.svg")
    parser.add_argument("--width", type=int, default=120)
    parser.add_argument("--height", type=int, default=40)
    args = parser.parse_args()

    state = demo_state()
    frame = Frame(
        state,
        Link("live", True, 0.3, None, 1742),
        START + timedelta(seconds=421),
        args.view,
        tuple(state.recent_events),
        Rates(
            requests_s=1.9,
            input_tokens_s=876.0,
            output_tokens_s=585.0,
            generated_s=1.9,
            train_steps_s=0.42,
            events_s=3.1,
        ),
    )
    console = Console(
        width=args.width,
        height=args.height,
        record=True,
        file=io.StringIO(),
        force_terminal=True,
        color_system="truecolor",
    )
    console.print(render(frame, args.width, args.height), end="")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    console.save_svg(str(args.out), title="autotrain-dash")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
