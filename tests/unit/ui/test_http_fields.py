"""The HTTP server's projections of a view: the allowed field set, edge redaction, health, Prometheus text."""

from __future__ import annotations

import json

import pytest
from ui_builders import busy_state, view

from heidi_engine.bus.redaction import default_redactor
from heidi_engine.bus.state import RunState
from heidi_engine.ui.status_view import (
    ALLOWED_FIELDS,
    Health,
    assess,
    format_runs,
    format_status,
    status_fields,
)

SEED_STATUS_KEYS = {
    "run_id", "status", "current_round", "current_stage", "stop_requested", "pause_requested",
    "counters", "usage", "gpu_summary", "last_event_ts", "health", "updated_at",
}  # fmt: skip
FAKE_KEY = "sk-proj-Q3xv9LmT2aZkR8pWc1NbYh4dJf7GsE0u"


def test_status_has_exactly_the_seed_fields() -> None:
    body = status_fields(busy_state(), Health("ok"))
    assert set(body) == SEED_STATUS_KEYS == set(ALLOWED_FIELDS)
    assert body["gpu_summary"] == {"vram_used_mb": 3072.0, "vram_total_mb": 163840.0, "util_pct": 45.0}
    assert body["health"] == "ok" and body["counters"]["teacher_generated"] == 12
    json.dumps(body, allow_nan=False)


def test_status_has_no_nan_for_json() -> None:
    state = RunState()
    state.usage["estimated_cost_usd"] = float("nan")
    state.usage["input_tokens"] = float("inf")
    body = status_fields(state, Health("ok"))
    assert body["usage"]["estimated_cost_usd"] is None and body["usage"]["input_tokens"] is None
    json.dumps(body, allow_nan=False)


def test_status_is_redacted_at_the_edge() -> None:
    # Nothing upstream should let a key into these fields; the edge must hide one that slipped through.
    state = RunState(run_id=f"run {FAKE_KEY}", current_stage=f"token={FAKE_KEY}")
    state.counters[FAKE_KEY] = 1
    text = json.dumps(status_fields(state, Health("down", "no supervisor")))
    assert FAKE_KEY not in text and "REDACTED" in text


def test_status_redacts_environment_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    import heidi_engine.bus.redaction as redaction

    monkeypatch.setenv("PLANTED_API_KEY", "plantedvalue123456")
    monkeypatch.setattr(redaction, "_default", None)  # rebuilt from the patched environment
    assert default_redactor() is not None
    state = RunState(current_stage="uses plantedvalue123456")
    assert "plantedvalue123456" not in json.dumps(status_fields(state, Health("ok")))


@pytest.mark.parametrize(
    ("connected", "silence", "absent", "expected", "reason_part"),
    [
        (True, 0.1, None, "ok", None),
        (True, 0.1, "no supervisor connection file", "down", "connection file"),
        (False, None, "pid 42 of its connection file is gone", "down", "gone"),
        (False, 7.5, None, "degraded", "silent for 7.5 s"),
        (False, None, None, "degraded", "not heard from yet"),
    ],
)
def test_health_rules(
    connected: bool, silence: float | None, absent: str | None, expected: str, reason_part: str | None
) -> None:
    health = assess(view(connected=connected, silence_s=silence), absent)
    assert health.state == expected
    assert health.http_status == (200 if expected == "ok" else 503)
    body = health.body()
    if reason_part is None:
        assert body == {"health": "ok"}
    else:
        assert body["health"] == expected and reason_part in body["reason"]


def test_human_status_and_runs() -> None:
    status = {
        **status_fields(busy_state(), Health("ok")),
        "total_rounds": 3,
        "pid": 99,
        "uptime_s": 1.5,
        "accepted_events": 7,
        "error": f"teacher said {FAKE_KEY}",
    }
    text = format_status(status)
    assert "run_20240215_123456_abc12345 · running" in text and "2/3 · stage train" in text
    assert "pause requested" in text and "teacher_generated 12" in text and "$0.1250" in text
    assert "3072.0/163840.0 MB VRAM · 45.0% util" in text
    assert FAKE_KEY not in text
    assert "none yet" in format_status({"run_id": None, "status": "idle", "pid": 1, "uptime_s": 0})
    runs = format_runs(
        [
            {
                "run_id": "run_20240215_123456_abc12345",
                "status": "completed",
                "current_round": 3,
                "total_rounds": 3,
                "started_at": "2024-02-15T12:34:56.789Z",
                "counters": {"eval_pass": 4},
                "rounds_done": 3,
                "duration_s": 3725.0,
                "estimated_cost_usd": 0.125,
                "best_round": 2,
                "best_pass_at_1": 0.75,
                "best_val_loss": 1.23456,
            }
        ]
    )
    assert "completed" in runs and "3/3" in runs and "1h02m" in runs and "$0.1250" in runs
    assert "0.75 (round 2)" in runs and "1.2346" in runs
    assert format_runs([]) == "no runs yet"


def test_a_problem_the_supervisor_reports_makes_it_degraded_with_that_reason() -> None:
    state = RunState(problem="cannot write events.jsonl: No space left on device")
    health = assess(view(state), None)
    assert health.state == "degraded" and health.http_status == 503
    assert "No space left on device" in health.body()["reason"]
    said = status_fields(state, health)["health"]
    assert said == "degraded: cannot write events.jsonl: No space left on device"
