"""The frozen v1.0 event: every field rule."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from heidi_engine.bus import redaction
from heidi_engine.bus.event import (
    ARTIFACT_PATHS_MAX,
    ERROR_MAX,
    MESSAGE_MAX,
    Event,
    is_run_id,
    new_run_id,
    utc_now_iso,
)

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
    for bad in (-1, 2**31 + 1, 2**64 - 1):
        with pytest.raises(ValidationError, match=r"in 0\.\.2147483648"):
            make(counters_delta={"test_pass": bad})
    assert make(counters_delta={"test_pass": 2**31}).counters_delta == {"test_pass": 2**31}
    for cost in (-0.5, 1e6 + 1, 1.7e308, float("inf"), float("nan")):
        with pytest.raises(ValidationError, match=r"finite number in 0\.\.1e"):
            make(usage_delta={"estimated_cost_usd": cost})
    with pytest.raises(ValidationError, match="usage 'input_tokens' delta must be an int in 0"):
        make(usage_delta={"input_tokens": 2**40})
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


KEY = "sk-proj-Q3xv9LmT2aZkR8pWc1NbYh4dJf7GsE0u"
DAEMON_SECRET = "Daemon.Own-Secret.7Qx2vL9"  # no rule knows its shape: only the environment does


@pytest.fixture
def daemon_secret(monkeypatch: pytest.MonkeyPatch) -> str:
    """The default redactor rebuilt over an environment holding the daemon's own secret."""
    monkeypatch.setenv("AT_UNIT_SERVICE_TOKEN", DAEMON_SECRET)
    monkeypatch.setattr(redaction, "_default", None)
    return DAEMON_SECRET


def test_artifact_paths_are_redacted_and_stay_relative(daemon_secret: str) -> None:
    paths = [f"data/{KEY}/samples.jsonl", daemon_secret, f"out/{daemon_secret}.bin", "out_lora_round_1/a.bin"]
    event = make(artifact_paths=paths)
    assert event.artifact_paths == [
        "data/REDACTED-openai_key/samples.jsonl",
        "REDACTED-env-AT_UNIT_SERVICE_TOKEN",
        "out/REDACTED-env-AT_UNIT_SERVICE_TOKEN.bin",
        "out_lora_round_1/a.bin",
    ]
    assert KEY not in str(event.to_record()) and daemon_secret not in str(event.to_record())
    # What the supervisor wrote validates again unchanged (the viewers' decoding), and passes a second time.
    assert Event.model_validate(event.to_record()).artifact_paths == event.artifact_paths
    assert Event.model_validate(event.to_record(), context={"redacted": True}) == event
    # A secret's marker that makes a path too long leaves a marker for the whole path.
    long_path = "d/" + "x" * 245 + "/" + daemon_secret + "/" + daemon_secret
    assert len(long_path) == 299
    assert make(artifact_paths=[long_path]).artifact_paths == ["REDACTED-artifact_path"]


def test_artifact_paths_are_bounded_and_a_refusal_shows_no_secret(daemon_secret: str) -> None:
    assert len(make(artifact_paths=["a"] * ARTIFACT_PATHS_MAX).artifact_paths) == ARTIFACT_PATHS_MAX
    with pytest.raises(ValidationError, match="65 artifact paths; at most 64"):
        make(artifact_paths=["a"] * (ARTIFACT_PATHS_MAX + 1))
    with pytest.raises(ValidationError, match="relative") as refused:
        make(artifact_paths=[f"/etc/{KEY}/{daemon_secret}"])
    assert KEY not in str(refused.value) and daemon_secret not in str(refused.value)
    assert "REDACTED" in str(refused.value)
    with pytest.raises(ValidationError, match="of 301 chars"):
        make(artifact_paths=["p" * 301])
    with pytest.raises(ValidationError, match="relative"):  # the egress context checks paths all the same
        Event.model_validate(
            {"run_id": RUN, "stage": "generate", "event_type": "progress", "artifact_paths": ["../x"]},
            context={"redacted": True},
        )


def test_a_secret_with_invisible_characters_inside_is_redacted_from_text(daemon_secret: str) -> None:
    hidden_key = f"{KEY[:6]}\u200b{KEY[6:20]}\u00ad{KEY[20:]}"
    hidden_own = f"{daemon_secret[:5]}\u00ad{daemon_secret[5:]}"
    event = make(level="error", event_type="error", message=f"key {hidden_key} and {hidden_own}", error=hidden_key)
    assert event.message == "key [REDACTED:openai_key] and [REDACTED:env:AT_UNIT_SERVICE_TOKEN]"
    assert event.error == "[REDACTED:openai_key]"
