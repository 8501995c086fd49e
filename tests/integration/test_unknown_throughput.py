"""Streamed replies that report no usage: the generate stage's progress says their tokens per second are
unknown, never ``0 tokens/s`` (the dashboard's Teacher view shows that line as the latest report)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fakes.openai_server import FakeOpenAIServer
from harness import FileRuntime

from heidi_engine.agents import generate
from heidi_engine.bus.config import load_config
from heidi_engine.bus.journal import read_events

pytestmark = pytest.mark.timeout(60)

CODE = "```python\ndef solve(x):\n    return x\n```"


def test_a_stream_without_usage_has_unknown_tokens_per_second(tmp_path: Path) -> None:
    with FakeOpenAIServer(latency_s=0.01) as server:
        server.fallback = ("nousage", CODE)
        values = {"TEACHER_BASE_URL": server.url, "SAMPLES_PER_ROUND": 4, "TEACHER_CONCURRENCY": 2, "VAL_RATIO": 0,
                  "TEACHER_STREAM": 1}  # fmt: skip
        config = load_config(None, env={}, overrides={k: str(v) for k, v in values.items()})
        generate.main(FileRuntime(tmp_path, config, "generate"))  # type: ignore[arg-type]
    messages = [event.message for event in read_events(tmp_path)]
    streamed = [m for m in messages if "time to first token" in m]
    assert streamed, messages
    assert all("tokens/s unknown (no usage reported)" in m for m in streamed), streamed
    assert not any(re.search(r"\b0 tokens/s", m) for m in messages), messages


def test_a_stream_with_usage_still_has_its_tokens_per_second(tmp_path: Path) -> None:
    with FakeOpenAIServer(latency_s=0.01) as server:
        values = {"TEACHER_BASE_URL": server.url, "SAMPLES_PER_ROUND": 4, "TEACHER_CONCURRENCY": 2, "VAL_RATIO": 0,
                  "TEACHER_STREAM": 1}  # fmt: skip
        config = load_config(None, env={}, overrides={k: str(v) for k, v in values.items()})
        generate.main(FileRuntime(tmp_path, config, "generate"))  # type: ignore[arg-type]
    streamed = [e.message for e in read_events(tmp_path) if "time to first token" in e.message]
    assert streamed and all(re.search(r"[1-9][\d,]* tokens/s", m) for m in streamed), streamed
