"""Teacher requests are written down before they are sent, so a kill -9 never makes one free.

A request the provider received is billed whether or not its reply is read. The generate agent is killed
with two requests in flight at a slow fake teacher; the supervisor starts it again, it resumes, and the
run's ``requests_sent`` equals the requests the server received, the lost ones counted at their most.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fakes.openai_server import FakeOpenAIServer
from harness import FileRuntime, SupervisorProc, agent_env, pid_alive, scripted, wait_until

from heidi_engine.agents import generate
from heidi_engine.agents.dataset.samples import read_jsonl_skipping_bad
from heidi_engine.agents.layout import RoundFiles
from heidi_engine.agents.teacher.intent import read_intents
from heidi_engine.agents.teacher.pricing import BUILTIN_PRICES, estimate_cost
from heidi_engine.bus.config import load_config
from heidi_engine.bus.journal import read_events

pytestmark = pytest.mark.timeout(180)

Start = Callable[..., SupervisorProc]
MODEL = "gpt-4o-mini"
MAX_TOKENS = 512


def test_a_kill_with_requests_in_flight_still_counts_every_request_the_server_received(
    start_supervisor: Start, home: Path
) -> None:
    config: dict[str, Any] = {
        "ROUNDS": 1,
        "SAMPLES_PER_ROUND": 6,
        "TEACHER_MODEL": MODEL,
        "TEACHER_MAX_TOKENS": MAX_TOKENS,
        "TEACHER_CONCURRENCY": 2,
        "TEACHER_MAX_RETRIES": 0,
        "VAL_RATIO": 0.0,
    }
    env = {**agent_env(scripted("--events", "0"), generate=""), "OPENAI_API_KEY": "sk-test-intent-1"}
    # Two answers at once, then two requests the server holds long past the kill.
    with FakeOpenAIServer(script=[("slow", 0), ("slow", 0), ("slow", 4), ("slow", 4)]) as server:
        config["TEACHER_BASE_URL"] = server.url
        sup = start_supervisor(env=env, config="".join(f"{k}: {json.dumps(v)}\n" for k, v in config.items()))
        run_id = sup.wait_ready().call("start")["run_id"]
        run_dir = home / "runs" / run_id
        assert server.wait_for_requests(4, timeout_s=60), sup.output()
        pid = int(sup.call("snapshot")["state"]["agents"]["generate"]["pid"])
        os.kill(pid, signal.SIGKILL)  # the two slow requests are in flight: the server holds them 4 s
        wait_until(lambda: not pid_alive(pid), 10, what="the killed agent gone")
        final = sup.wait_status("completed", "failed", timeout_s=120)
        received = len(server.requests)
        lost_bodies = [len(request.body) for request in server.requests[2:4]]
    assert final["status"] == "completed", sup.output()
    assert received == 8  # 2 answered, 2 lost with the agent, then the 4 samples not yet written
    assert final["counters"]["teacher_generated"] == 6
    assert final["usage"]["requests_sent"] == received
    rows = read_jsonl_skipping_bad(RoundFiles.of(run_dir, 1).raw)
    assert sorted(row["id"] for row in rows) == [f"r1-{i:05d}" for i in range(6)]
    # The lost requests cost what a timed-out one may: every byte sent as input, the token cap as output.
    used = [row["metadata"]["usage"] for row in rows]
    answered = [
        estimate_cost(MODEL, u["input_tokens"], u["output_tokens"], BUILTIN_PRICES) or 0.0 for u in used
    ]
    bounds = [estimate_cost(MODEL, size, MAX_TOKENS, BUILTIN_PRICES) or 0.0 for size in lost_bodies]
    assert final["usage"]["estimated_cost_usd"] == pytest.approx(sum(answered) + sum(bounds), rel=1e-9)
    intents = read_intents(RoundFiles.of(run_dir, 1).requests)
    assert (intents.requests, intents.lost) == (8, 2)
    messages = [e.message for e in read_events(run_dir) if e.stage == "generate"]
    assert any("2 request(s) sent got no reply, counted at their most" in m for m in messages), messages
    assert any("signal SIGKILL" in m for m in messages), messages


def test_every_request_is_written_down_and_the_file_adds_up_to_the_usage(tmp_path: Path) -> None:
    script = [
        ("status", 503),
        ("ok", "```python\ndef f():\n    return 1\n```", 11, 7),
        ("status", 429, {"Retry-After": "0"}),
    ]
    with FakeOpenAIServer(script=script) as server:
        overrides = {"TEACHER_BASE_URL": server.url, "SAMPLES_PER_ROUND": "5", "TEACHER_CONCURRENCY": "1",
                     "VAL_RATIO": "0", "TEACHER_MAX_RETRIES": "2"}  # fmt: skip
        config = load_config(None, env={}, overrides=overrides)
        generate.main(FileRuntime(tmp_path, config, "generate"))  # type: ignore[arg-type]
        received = len(server.requests)
    path = RoundFiles.of(tmp_path, 1).requests
    rows = read_jsonl_skipping_bad(path)
    sent = [row for row in rows if "sent" in row]
    assert received == 7 and len(sent) == received and sum(row["retry"] for row in sent) == 2
    # Each request's row comes before the row of its landing.
    order = [row.get("sent") or row.get("landed") for row in rows]
    assert all(order.index(row["sent"]) < len(order) - 1 - order[::-1].index(row["sent"]) for row in sent)
    intents = read_intents(path)
    assert intents.lost == 0
    raw = read_jsonl_skipping_bad(RoundFiles.of(tmp_path, 1).raw)
    usage = intents.usage.record()
    for name in ("requests_sent", "input_tokens", "output_tokens", "retries", "rate_limits_hit"):
        assert usage.get(name, 0) == sum(row["metadata"]["usage"].get(name, 0) for row in raw), name
    assert path.stat().st_mode & 0o777 == 0o600
