"""The generate stage, in-process, against a streaming fake teacher that cuts some of its replies.

A reply counts as an answer only if it ended properly (:mod:`heidi_engine.agents.teacher.reply`): a stream
that says ``[DONE]`` with no content and no ``finish_reason`` (llama.cpp's server under load) or one cut
mid-content is a failed attempt, retried, and never a written sample. The run's state is folded from
events.jsonl by the real reducer, as every viewer folds the supervisor's events.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from fakes.openai_server import FakeOpenAIServer, ScriptItem
from harness import FileRuntime, replayed_state

from heidi_engine.agents import generate
from heidi_engine.agents.dataset.samples import read_jsonl_skipping_bad
from heidi_engine.agents.layout import RoundFiles
from heidi_engine.bus.config import AutoTrainConfig, load_config

pytestmark = pytest.mark.timeout(90)

SSE = "text/event-stream"
N = 12
# llama-cpp-python's server at concurrency 4: the role, then [DONE]; no content, no finish_reason.
ROLE_ONLY = ("raw", SSE, b'data: {"choices":[{"delta":{"role":"assistant"}}]}\n\ndata: [DONE]\n\n')
ROLE_AND_USAGE = (
    "raw",
    SSE,
    b'data: {"choices":[{"delta":{"role":"assistant"}}]}\n\n'
    b'data: {"choices":[],"usage":{"prompt_tokens":40,"completion_tokens":0}}\n\ndata: [DONE]\n\n',
)
MID_CONTENT = ("cut", 400)  # the default streamed reply, cut inside its content: no [DONE]
ANSWER = ("slow", 0)  # the default reply, in its turn
SCRIPT: list[ScriptItem] = [ROLE_ONLY, ANSWER, ANSWER, MID_CONTENT, ANSWER, ROLE_AND_USAGE, ANSWER, ROLE_ONLY]
SCRIPT += [ANSWER] * (N - len(SCRIPT))
K = sum(item[0] in ("raw", "cut") for item in SCRIPT)


def _config(url: str, **overrides: Any) -> AutoTrainConfig:
    values = {
        "TEACHER_BASE_URL": url,
        "SAMPLES_PER_ROUND": N,
        "TEACHER_CONCURRENCY": 4,
        "TEACHER_STREAM": "1",
        "VAL_RATIO": 0,
        **overrides,
    }
    return load_config(None, env={}, overrides={k: str(v) for k, v in values.items()})


def _asked(server: FakeOpenAIServer) -> Counter[str]:
    return Counter(request.json()["messages"][-1]["content"] for request in server.requests)


def test_cut_streams_are_never_written_and_a_resume_asks_for_them_again(tmp_path: Path) -> None:
    files = RoundFiles.of(tmp_path, 1)
    with FakeOpenAIServer(script=SCRIPT) as server:
        config = _config(server.url, TEACHER_MAX_RETRIES=0)  # every cut reply fails its sample at once
        generate.main(FileRuntime(tmp_path, config, "generate"))  # type: ignore[arg-type]
        first_pass = len(server.requests)
        prompt_tokens, completion_tokens = server.usage_sent
        raw, failed = read_jsonl_skipping_bad(files.raw), read_jsonl_skipping_bad(files.failed)
        state = replayed_state(tmp_path)
        assert K == 4 and first_pass == N
        assert len(raw) == N - K and all(row["output"].startswith("def answer_") for row in raw)
        assert all(row["metadata"]["finish_reason"] == "stop" for row in raw)
        assert len(failed) == K and {row["kind"] for row in failed} == {"incomplete"}
        assert Counter(row["reason"] for row in failed) == {
            "incomplete reply: no finish_reason (gave up after 0 retries)": 3,
            "incomplete reply: the stream ended before [DONE] (gave up after 0 retries)": 1,
        }
        assert state.counters["teacher_generated"] == N - K and state.counters["teacher_failed"] == K
        # Every attempt counted, the cut ones too; the tokens the server reported, cut replies' included.
        assert state.usage["requests_sent"] == N
        assert (state.usage["input_tokens"], state.usage["output_tokens"]) == (
            prompt_tokens,
            completion_tokens,
        )
        assert state.usage["estimated_cost_usd"] is None  # three cut replies reported no usage: unknown
        assert prompt_tokens >= 40  # the cut reply that did report usage is in it

        # The resumed stage asks again for exactly the cut ones, and then every sample is written.
        generate.main(FileRuntime(tmp_path, config, "generate"))  # type: ignore[arg-type]
        asked = _asked(server)
    assert len(server.requests) == N + K
    assert sorted(asked.values()) == [1] * (N - K) + [2] * K
    rows = read_jsonl_skipping_bad(files.raw)
    assert sorted(row["id"] for row in rows) == [f"r1-{i:05d}" for i in range(N)]
    assert {row["id"] for row in failed} == {row["id"] for row in rows[N - K :]}
    state = replayed_state(tmp_path)
    assert state.counters["teacher_generated"] == N and state.usage["requests_sent"] == N + K


def test_cut_streams_are_retried_and_only_completed_answers_count(tmp_path: Path) -> None:
    files = RoundFiles.of(tmp_path, 1)
    with FakeOpenAIServer(script=SCRIPT) as server:
        generate.main(FileRuntime(tmp_path, _config(server.url, TEACHER_MAX_RETRIES=2), "generate"))  # type: ignore[arg-type]
        asked = _asked(server)
        requests = len(server.requests)
        prompt_tokens, completion_tokens = server.usage_sent
        assert server.max_in_flight <= 4
    raw = read_jsonl_skipping_bad(files.raw)
    state = replayed_state(tmp_path)
    # Each cut reply's sample was asked once more, and that answer is the one written.
    assert requests == N + K and sorted(asked.values()) == [1] * (N - K) + [2] * K
    assert sorted(row["id"] for row in raw) == [f"r1-{i:05d}" for i in range(N)]
    assert all(
        row["output"].startswith("def answer_") and row["metadata"]["finish_reason"] == "stop" for row in raw
    )
    assert not files.failed.exists()
    assert state.counters["teacher_generated"] == N and state.counters["teacher_failed"] == 0
    assert state.usage["requests_sent"] == N + K and state.usage["retries"] == K
    assert (state.usage["input_tokens"], state.usage["output_tokens"]) == (prompt_tokens, completion_tokens)
    retried = [row for row in raw if row["metadata"]["usage"]["requests_sent"] == 2]
    assert len(retried) == K and all(row["metadata"]["usage"]["retries"] == 1 for row in retried)
