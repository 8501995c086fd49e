"""The frozen v1.0 event: every field rule."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from heidi_engine.bus.event import ERROR_MAX, MESSAGE_MAX, Event, is_run_id, new_run_id, utc_now_iso

RUN = "run_20240215_123456_abc12345"


def make(**fields: Any) -> Event:
    base: dict[str, Any] = {"run_id": RUN, "stage": "generate", "event_type": "progress"}
    base.update(fields)
    return Event.model_validate(base)


def test_defaults_and_exact_field_set() -> None:
    event = make()
    record = event.to_record()
    assert set(record) == {
        "event_version", "ts", "run_id", "round", "stage", "level", "event_type", "message",
        "counters_delta", "usage_delta", "artifact_paths",
    }
    assert record["event_version"] == "1.0" and record["round"] == 0 and record["level"] == "info"
    with_error = make(level="error", event_type="error", error="boom").to_record()
    assert with_error["error"] == "boom"


def test_unknown_field_refused() -> None:
    with pytest.raises(ValidationError, match="extra"):
        make(seq=3)


@pytest.mark.parametrize("field,value", [
    ("stage", "training"), ("stage", "GENERATE"), ("level", "debug"), ("event_type", "start"),
    ("event_version", "1.1"), ("round", -1), ("round", "1"), ("round", True),
])
def test_value_sets(field: str, value: Any) -> None:
    with pytest.raises(ValidationError):
        make(**{field: value})


@pytest.mark.parametrize("ts", ["2024-02-15T12:34:56Z", "2024-02-15T12:34:56.789Z", "2024-02-15T12:34:56.123456Z"])
def test_timestamp_z_accepted(ts: str) -> None:
    assert make(ts=ts).ts == ts


@pytest.mark.parametrize("ts", ["2024-02-15T12:34:56", "2024-02-15T12:34:56+00:00", "2024-02-15 12:34:56Z", "yesterday"])
def test_timestamp_without_z_refused(ts: str) -> None:
    with pytest.raises(ValidationError, match="Z"):
        make(ts=ts)


def test_utc_now_is_valid() -> None:
    assert make(ts=utc_now_iso()).ts.endswith("Z")


@pytest.mark.parametrize("run_id", ["run_2024_1", "../etc/passwd", "run_20240215_123456_ABC12345", "run_20240215_123456_abc1234"])
def test_run_id_pattern(run_id: str) -> None:
    assert not is_run_id(run_id)
    with pytest.raises(ValidationError, match="run_YYYYMMDD"):
        make(run_id=run_id)


def test_new_run_id_matches_pattern() -> None:
    assert is_run_id(new_run_id())


def test_message_truncated_after_redaction() -> None:
    secret = "sk-proj-" + "A1b2C3d4E5f6G7h8" * 3
    event = make(message=f"key {secret} " + "x" * 1000)
    assert len(event.message) <= MESSAGE_MAX
    assert secret not in event.message
    assert "REDACTED" in event.message


def test_error_truncated_and_only_on_error_level() -> None:
    event = make(level="error", event_type="error", error="e" * 1000)
    assert event.error is not None and len(event.error) <= ERROR_MAX
    with pytest.raises(ValidationError, match="only when level"):
        make(level="warn", error="boom")


def test_ansi_stripped() -> None:
    assert make(message="\x1b[31mred\x1b[0m text").message == "red text"


def test_counters_and_usage_rules() -> None:
    assert make(counters_delta={"teacher_generated": 2}).counters_delta == {"teacher_generated": 2}
    with pytest.raises(ValidationError, match="unknown counter"):
        make(counters_delta={"made_up": 1})
    with pytest.raises(ValidationError, match=">= 0"):
        make(counters_delta={"test_pass": -1})
    with pytest.raises(ValidationError, match="unknown usage"):
        make(usage_delta={"dollars": 1})
    with pytest.raises(ValidationError, match="int"):
        make(usage_delta={"input_tokens": 1.5})
    assert make(usage_delta={"estimated_cost_usd": None}).usage_delta == {"estimated_cost_usd": None}
    assert make(usage_delta={"estimated_cost_usd": 0.25}).usage_delta["estimated_cost_usd"] == 0.25


@pytest.mark.parametrize("path", ["/etc/passwd", "../x", "a/../../b", "data/round_1/../../../x"])
def test_artifact_paths_relative_only(path: str) -> None:
    with pytest.raises(ValidationError, match="relative"):
        make(artifact_paths=[path])


def test_artifact_paths_ok() -> None:
    assert make(artifact_paths=["out_lora_round_1/adapter_model.safetensors"]).artifact_paths
