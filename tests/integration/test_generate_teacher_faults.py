"""The generate stage, in-process, when the teacher misbehaves as real providers do (fake server, 127.0.0.1).

Quota errors stop the stage at once; reasoning models are asked in their form; replies without usage
make the cost unknown; an outage parks the stage and nothing is lost; transient failures of an older
run are asked again on resume. The run's state is folded from events.jsonl by the real reducer, as
every viewer folds the supervisor's events.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fakes.openai_server import FakeOpenAIServer
from harness import FileRuntime, replayed_state

from heidi_engine.agents import generate
from heidi_engine.agents.dataset.samples import read_jsonl_skipping_bad, write_jsonl
from heidi_engine.agents.layout import RoundFiles
from heidi_engine.agents.runtime import FatalStageError
from heidi_engine.bus.config import AutoTrainConfig, load_config
from heidi_engine.bus.journal import read_events

pytestmark = pytest.mark.timeout(60)

QUOTA = {"error": {"message": "You exceeded your current quota.", "type": "insufficient_quota"}}


def _config(url: str, **overrides: Any) -> AutoTrainConfig:
    # No held-out set: these tests count the teacher's requests for the round's own samples.
    values = {"TEACHER_BASE_URL": url, "SAMPLES_PER_ROUND": 6, "TEACHER_CONCURRENCY": 2, "VAL_RATIO": 0, **overrides}
    return load_config(None, env={}, overrides={k: str(v) for k, v in values.items()})


def _messages(run_dir: Path, level: str | None = None) -> list[str]:
    return [e.message for e in read_events(run_dir) if level is None or e.level == level]


def test_insufficient_quota_stops_the_stage_after_one_request(tmp_path: Path) -> None:
    with FakeOpenAIServer() as server:
        server.fallback = ("status", 429, {}, QUOTA)
        config = _config(server.url, TEACHER_CONCURRENCY=1, SAMPLES_PER_ROUND=20)
        with pytest.raises(FatalStageError) as stopped:
            generate.main(FileRuntime(tmp_path, config, "generate"))  # type: ignore[arg-type]
        requests = len(server.requests)
    assert requests == 1
    assert "You exceeded your current quota." in str(stopped.value)
    assert not RoundFiles.of(tmp_path, 1).failed.exists()  # not 20 failed samples


def test_a_reasoning_model_generates_every_sample(tmp_path: Path) -> None:
    with FakeOpenAIServer() as server:
        server.reasoning_only = True
        generate.main(FileRuntime(tmp_path, _config(server.url, TEACHER_MODEL="o3-mini"), "generate"))  # type: ignore[arg-type]
        sent = [r.json() for r in server.requests]
    assert len(read_jsonl_skipping_bad(RoundFiles.of(tmp_path, 1).raw)) == 6 == len(sent)
    assert all("max_completion_tokens" in s and "temperature" not in s for s in sent)


def test_replies_without_usage_make_the_run_cost_unknown_and_say_so(tmp_path: Path) -> None:
    with FakeOpenAIServer(script=[("ok", "```python\ndef f():\n    return 1\n```", 9, 9)] * 5) as server:
        server.fallback = ("nousage", "```python\ndef g():\n    return 2\n```")
        generate.main(FileRuntime(tmp_path, _config(server.url), "generate"))  # type: ignore[arg-type]
    state = replayed_state(tmp_path)
    assert state.usage["estimated_cost_usd"] is None  # unknown, not $0 and not the 5 metered replies
    assert state.counters["teacher_generated"] == 6
    final = _messages(tmp_path)[-1]
    assert "estimated cost unknown (unknown: 1 teacher repl(ies) reported no token usage)" in final


def test_an_outage_parks_the_stage_then_it_completes_with_no_sample_lost(tmp_path: Path) -> None:
    with FakeOpenAIServer() as server:
        # The first four requests meet an outage; no retries, so each one's failure parks at once.
        server.down = lambda: len(server.requests) <= 4
        config = _config(
            server.url, TEACHER_MAX_RETRIES=0, TEACHER_RETRY_BUDGET_S=0, TEACHER_PARK_INTERVAL_S=1
        )
        generate.main(FileRuntime(tmp_path, config, "generate"))  # type: ignore[arg-type]
        requests = len(server.requests)
    rows = read_jsonl_skipping_bad(RoundFiles.of(tmp_path, 1).raw)
    assert sorted(r["id"] for r in rows) == [f"r1-{i:05d}" for i in range(6)]
    assert not RoundFiles.of(tmp_path, 1).failed.exists()
    state = replayed_state(tmp_path)
    assert state.counters["teacher_generated"] == 6 and state.counters["teacher_failed"] == 0
    assert state.usage["requests_sent"] == requests
    warnings = _messages(tmp_path, "warn")
    parked = [m for m in warnings if m.startswith("teacher unreachable since ")]
    assert len(parked) == 1 and "retrying every 1 s" in parked[0] and "HTTP 503" in parked[0], warnings
    assert any(m.startswith("teacher reachable again") for m in warnings), warnings


def test_resume_asks_again_for_samples_that_failed_for_a_transient_reason(tmp_path: Path) -> None:
    files = RoundFiles.of(tmp_path, 1).ensure()
    failed = [
        {"id": "r1-00000", "phase": "solve", "reason": "HTTP 503 (gave up after 5 retries)", "usage": {}},
        {"id": "r1-00001", "phase": "solve", "reason": "no reply within timeout_s=60", "usage": {}},
        {"id": "r1-00002", "phase": "solve", "reason": "malformed reply: no choices", "usage": {}},
        {"id": "r1-00003", "phase": "solve", "reason": "anything", "kind": "transient", "usage": {}},
    ]
    write_jsonl(files.failed, failed)
    with FakeOpenAIServer() as server:
        generate.main(FileRuntime(tmp_path, _config(server.url), "generate"))  # type: ignore[arg-type]
        requests = len(server.requests)
    written = sorted(r["id"] for r in read_jsonl_skipping_bad(files.raw))
    assert written == ["r1-00000", "r1-00001", "r1-00003", "r1-00004", "r1-00005"]
    assert requests == 5  # the malformed one failed for good and is not asked again
    assert json.loads(files.failed.read_text().splitlines()[2])["id"] == "r1-00002"
