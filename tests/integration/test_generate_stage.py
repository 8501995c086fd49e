"""The real generate agent under a real supervisor, against the fake OpenAI server on 127.0.0.1.

The other stages run the scripted agent with no events, so every counter and usage figure in the run's
state comes from the generate agent alone.
"""

from __future__ import annotations

import json
import stat
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fakes.openai_server import FakeOpenAIServer
from harness import FileRuntime, SupervisorProc, agent_env, scripted, wait_until

from heidi_engine.agents import generate
from heidi_engine.agents.dataset.samples import read_jsonl_skipping_bad, write_jsonl
from heidi_engine.agents.dataset.tasks import instruction_text, load_bank, tasks_for_round
from heidi_engine.agents.layout import RoundFiles
from heidi_engine.agents.teacher.pricing import BUILTIN_PRICES, estimate_cost
from heidi_engine.bus.config import load_config
from heidi_engine.bus.journal import read_events

pytestmark = pytest.mark.timeout(180)

Start = Callable[..., SupervisorProc]
KEY = "sk-test-FAKEKEY-0123456789abcdefXYZ"
SOLUTION = "Here you go:\n```python\ndef solve(x):\n    return x\n```"


def config_yaml(url: str, **extra: Any) -> str:
    values: dict[str, Any] = {
        "ROUNDS": 1,
        "SAMPLES_PER_ROUND": 12,
        "TEACHER_BASE_URL": url,
        "TEACHER_MODEL": "gpt-4o-mini",
        "TEACHER_CONCURRENCY": 3,
        "TEACHER_MAX_RETRIES": 3,
        "TEACHER_TIMEOUT_S": 10.0,
        "VAL_RATIO": 0.0,  # no held-out tasks: these tests count the round's own requests
        **extra,
    }
    return "".join(f"{name}: {json.dumps(value)}\n" for name, value in values.items())


def supervisor_env(**extra: str) -> dict[str, str]:
    """Real generate (the default module), scripted no-op agents for the other stages, a fake key."""
    return {**agent_env(scripted("--events", "0"), generate=""), "OPENAI_API_KEY": KEY, **extra}


def run(
    start: Start,
    url: str,
    *,
    statuses: tuple[str, ...] = ("completed", "failed"),
    env: dict[str, str] | None = None,
    **config: Any,
) -> tuple[SupervisorProc, str, dict[str, Any]]:
    sup = start(env=env or supervisor_env(), config=config_yaml(url, **config)).wait_ready()
    run_id = sup.call("start")["run_id"]
    final = sup.wait_status(*statuses, timeout_s=120)
    return sup, run_id, final


def user_messages(server: FakeOpenAIServer) -> list[str]:
    return [request.json()["messages"][-1]["content"] for request in server.requests]


def messages_of(run_dir: Path, **match: Any) -> list[str]:
    return [
        e.message
        for e in read_events(run_dir)
        if all(getattr(e, key) == value for key, value in match.items())
    ]


def assert_nowhere(home: Path, *secrets: str) -> None:
    for path in home.rglob("*"):
        if path.is_file() and not path.is_socket():
            data = path.read_bytes()
            for secret in secrets:
                assert secret.encode() not in data, f"{secret[:8]}... found in {path}"


def test_usage_retries_rate_limits_and_cost_equal_what_the_server_reported(
    start_supervisor: Start, home: Path
) -> None:
    script = [
        ("ok", SOLUTION, 123, 45),
        ("status", 429, {"Retry-After": "0"}),
        ("status", 500),
        ("status", 503),
        ("json", {"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 0}}),  # cut: asked again
        ("raw", "application/json", b'{"choices": ["?"], "usage": {"prompt_tokens": 5, "completion_tokens": 0}}'),
        ("ok", SOLUTION, 77, 9),
    ]
    with FakeOpenAIServer(script=script) as server:
        sup, run_id, final = run(start_supervisor, server.url)
        requests = len(server.requests)
        prompt_tokens, completion_tokens = server.usage_sent
    assert final["status"] == "completed", sup.output()
    counters, usage = final["counters"], final["usage"]
    assert counters["teacher_generated"] == 11 and counters["teacher_failed"] == 1
    # 12 samples, four of them retried once each (the 200 without choices too); the malformed one is not.
    assert requests == 16 and usage["requests_sent"] == 16
    assert usage["retries"] == 4 and usage["rate_limits_hit"] == 1
    assert (usage["input_tokens"], usage["output_tokens"]) == (prompt_tokens, completion_tokens)
    assert usage["estimated_cost_usd"] == pytest.approx(
        estimate_cost("gpt-4o-mini", prompt_tokens, completion_tokens, BUILTIN_PRICES), rel=1e-9
    )
    run_dir = home / "runs" / run_id
    raw = read_jsonl_skipping_bad(run_dir / "data" / "round_1" / "raw.jsonl")
    failed = read_jsonl_skipping_bad(run_dir / "data" / "round_1" / "failed.jsonl")
    assert len(raw) == 11 and len({row["id"] for row in raw}) == 11
    assert [row["reason"] for row in failed] == ["malformed reply: choices[0] is not an object"]
    # The code is taken out of its fence; the prose around it is not kept.
    assert sum(row["output"] == "def solve(x):\n    return x" for row in raw) == 2
    assert all(row["output"].startswith("def ") and "```" not in row["output"] for row in raw)
    assert all(row["metadata"]["teacher_model"] == "gpt-4o-mini" for row in raw)
    # Every token the server reported is in a sample's usage or in the failed one's (which job met the
    # reply without choices, and whether its retry met the malformed one, is up to the threads).
    in_rows = sum(row["metadata"]["usage"]["input_tokens"] for row in raw)
    assert in_rows + failed[0]["usage"]["input_tokens"] == prompt_tokens
    assert failed[0]["usage"]["input_tokens"] in (5, 10)
    assert any("malformed reply" in m for m in messages_of(run_dir, stage="generate", level="warn"))
    final_event = [e for e in read_events(run_dir) if e.stage == "generate" and e.artifact_paths]
    assert final_event[-1].artifact_paths == ["data/round_1/raw.jsonl"]
    for path in (run_dir / "data").rglob("*"):
        assert stat.S_IMODE(path.stat().st_mode) == (0o700 if path.is_dir() else 0o600), path
    sup.stop()
    assert_nowhere(home, KEY)


def test_stop_lands_at_a_batch_boundary_and_resume_never_asks_again(
    start_supervisor: Start, home: Path
) -> None:
    with FakeOpenAIServer(latency_s=0.15) as server:
        sup = start_supervisor(
            env=supervisor_env(), config=config_yaml(server.url, SAMPLES_PER_ROUND=20, TEACHER_CONCURRENCY=2)
        ).wait_ready()
        run_id = sup.call("start")["run_id"]
        wait_until(lambda: sup.status()["counters"]["teacher_generated"] >= 4, 60, what="4 samples")
        sup.call("stop")
        stopped = sup.wait_status("stopped", timeout_s=60)
        raw_path = home / "runs" / run_id / "data" / "round_1" / "raw.jsonl"
        written = read_jsonl_skipping_bad(raw_path)
        assert raw_path.read_bytes().endswith(b"\n")
        assert 4 <= len(written) < 20
        # Everything asked before the stop landed on disk and was counted: nothing was in flight.
        assert stopped["counters"]["teacher_generated"] == len(written) == len(server.requests)
        sup.call("resume_run", {"run_id": run_id})
        done = sup.wait_status("completed", "failed", timeout_s=120)
        asked = Counter(user_messages(server))
    assert done["status"] == "completed", sup.output()
    expected = {instruction_text(task) for task in tasks_for_round(load_bank(), 1, 20, 42)}
    assert set(asked) == expected and set(asked.values()) == {1}
    assert done["counters"]["teacher_generated"] == 20 and done["usage"]["requests_sent"] == 20
    rows = read_jsonl_skipping_bad(raw_path)
    assert sorted(row["id"] for row in rows) == [f"r1-{i:05d}" for i in range(20)]
    assert rows[: len(written)] == written
    run_dir = home / "runs" / run_id
    assert any("already written" in m for m in messages_of(run_dir, stage="generate"))


def test_pause_parks_between_batches_and_resume_continues(start_supervisor: Start, home: Path) -> None:
    with FakeOpenAIServer(latency_s=0.2) as server:
        sup = start_supervisor(
            env=supervisor_env(), config=config_yaml(server.url, SAMPLES_PER_ROUND=24, TEACHER_CONCURRENCY=2)
        ).wait_ready()
        sup.call("start")
        wait_until(lambda: sup.status()["counters"]["teacher_generated"] >= 2, 60, what="2 samples")
        sup.call("pause")
        paused = sup.wait_status("paused", timeout_s=30)
        assert paused["counters"]["teacher_generated"] < 24
        asked = len(server.requests)
        # Parked: no request goes out, however long the pause lasts (here: a bounded wait for one).
        assert not server.wait_for(lambda s: len(s.requests) > asked, timeout_s=1.5)
        sup.call("resume")
        done = sup.wait_status("completed", "failed", timeout_s=120)
        counts = Counter(user_messages(server))
    assert done["status"] == "completed", sup.output()
    assert done["counters"]["teacher_generated"] == 24 and len(counts) == 24 and set(counts.values()) == {1}


def test_budget_stops_generation_with_a_clear_warning(start_supervisor: Start, home: Path) -> None:
    # 100k input + 50k output tokens of gpt-4o-mini cost $0.045 a reply: the third crosses $0.10.
    script = [("ok", SOLUTION, 100_000, 50_000)] * 6
    with FakeOpenAIServer(script=script) as server:
        sup, run_id, final = run(
            start_supervisor, server.url, SAMPLES_PER_ROUND=6, TEACHER_CONCURRENCY=1, MAX_COST_USD=0.1
        )
        requests = len(server.requests)
    assert final["status"] == "completed", sup.output()
    assert requests == 3 and final["counters"]["teacher_generated"] == 3
    assert final["usage"]["estimated_cost_usd"] == pytest.approx(0.135)
    warnings = messages_of(home / "runs" / run_id, stage="generate", level="warn")
    assert any(
        m.startswith("budget reached") and "MAX_COST_USD $0.1000" in m and "3 of 6" in m for m in warnings
    )


def test_self_instruct_proposes_then_solves_and_bad_proposals_fail(
    start_supervisor: Start, home: Path
) -> None:
    proposal = {
        "entry_point": "double_it",
        "signature": "def double_it(n: int) -> int:",
        "description": "Return twice n.",
        "tests": ["assert double_it(2) == 4", "assert double_it(0) == 0"],
        "difficulty": "easy",
        "tags": ["math"],
    }
    script = [
        ("ok", "```json\n" + json.dumps(proposal) + "\n```", 50, 40),
        ("ok", "I would rather not.", 50, 5),
        (
            "ok",
            json.dumps(
                {
                    **proposal,
                    "entry_point": "twice",
                    "signature": "def twice(n: int) -> int:",
                    "tests": "assert twice(1) == 2",
                }
            ),
            50,
            40,
        ),
        ("ok", "```python\ndef double_it(n):\n    return 2 * n\n```", 30, 12),
        ("ok", "```python\ndef twice(n):\n    return n + n\n```", 30, 12),
    ]
    with FakeOpenAIServer(script=script) as server:
        sup, run_id, final = run(
            start_supervisor,
            server.url,
            SAMPLES_PER_ROUND=3,
            TEACHER_CONCURRENCY=1,
            TASK_SOURCE="self-instruct",
        )
        asked = user_messages(server)
    assert final["status"] == "completed", sup.output()
    assert final["counters"]["teacher_generated"] == 2 and final["counters"]["teacher_failed"] == 1
    assert final["usage"]["input_tokens"] == 50 * 3 + 30 * 2
    assert all("Propose ONE new Python programming task" in m for m in asked[:3])
    assert "def double_it(n: int) -> int:" in asked[3]
    rows = read_jsonl_skipping_bad(home / "runs" / run_id / "data" / "round_1" / "raw.jsonl")
    assert [(row["id"], row["metadata"]["task_id"]) for row in rows] == [
        ("r1-00000", "self/r1-00000"),
        ("r1-00002", "self/r1-00002"),
    ]
    assert rows[0]["tests"] == "assert double_it(2) == 4\nassert double_it(0) == 0"


def test_a_refused_key_fails_the_run_with_a_clear_error(start_supervisor: Start, home: Path) -> None:
    refusal = {"error": {"message": f"Incorrect API key provided: {KEY}"}}
    with FakeOpenAIServer(script=[("status", 401, {}, refusal)] * 3) as server:
        sup, run_id, final = run(start_supervisor, server.url)
    assert final["status"] == "failed" and "failed permanently" in final["error"]
    errors = messages_of(home / "runs" / run_id, stage="generate", level="error")
    assert any("HTTP 401" in m and "TEACHER_BASE_URL" in m for m in errors), errors
    sup.stop()
    assert_nowhere(home, KEY)


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({"TASK_SOURCE": "file:tasks/mine.jsonl"}, "mine.jsonl:2: invalid JSON"),
        ({"TEACHER_MODEL": "local:./no/such/model"}, "does not exist"),
        ({"MAX_COST_USD": 1.0, "TEACHER_MODEL": "my-unpriced-model"}, "cost of TEACHER_MODEL"),
        ({"TEACHER_BASE_URL": "http://user:pw@127.0.0.1:9/v1"}, "must not carry credentials"),
    ],
)
def test_bad_settings_fail_the_run_at_once(
    start_supervisor: Start, home: Path, settings: dict[str, Any], expected: str
) -> None:
    (home / "tasks").mkdir()
    bank_line = (Path(__file__).parents[2] / "agents" / "data" / "tasks.jsonl").read_text().splitlines()[0]
    (home / "tasks" / "mine.jsonl").write_text(bank_line + "\n{not json\n")
    with FakeOpenAIServer() as server:
        sup, run_id, final = run(
            start_supervisor, server.url, env=supervisor_env(HF_HUB_OFFLINE="1"), **settings
        )
        assert server.requests == []
    assert final["status"] == "failed", sup.output()
    errors = messages_of(home / "runs" / run_id, stage="generate", level="error")
    assert any(expected in m for m in errors), errors
    assert final["counters"]["teacher_generated"] == 0


def test_a_restarted_generate_reports_only_what_events_did_not_count(tmp_path: Path) -> None:
    with FakeOpenAIServer() as server:
        config = load_config(
            None,
            env={},
            overrides={
                "TEACHER_BASE_URL": server.url,
                "SAMPLES_PER_ROUND": "6",
                "TEACHER_CONCURRENCY": "2",
                "VAL_RATIO": "0",
            },
        )
        first = tmp_path / "first"
        first.mkdir()
        generate.main(FileRuntime(first, config, "generate"))  # type: ignore[arg-type]
        rows = read_jsonl_skipping_bad(RoundFiles.of(first, 1).raw)
        assert len(rows) == 6 == len(server.requests)
        # A kill -9 after four rows were written (a fifth torn) but only the first event was counted.
        second = tmp_path / "second"
        second.mkdir()
        files = RoundFiles.of(second, 1).ensure()
        write_jsonl(files.raw, rows[:4])
        with open(files.raw, "ab") as handle:
            handle.write(json.dumps(rows[4]).encode()[:50])
        counted_event = next(
            line
            for line in (first / "events.jsonl").read_text().splitlines()
            if '"teacher_generated":2' in line
        )
        (second / "events.jsonl").write_text(counted_event + "\n")
        generate.main(FileRuntime(second, config, "generate"))  # type: ignore[arg-type]
        asked_again = [r.json()["messages"][-1]["content"] for r in server.requests[6:]]
    tasks = tasks_for_round(load_bank(), 1, 6, 42)
    missing = sorted({f"r1-{i:05d}" for i in range(6)} - {row["id"] for row in rows[:4]})
    assert sorted(asked_again) == sorted(instruction_text(tasks[int(i[3:])]) for i in missing)
    final_rows = read_jsonl_skipping_bad(files.raw)
    assert sorted(row["id"] for row in final_rows) == [f"r1-{i:05d}" for i in range(6)]
    counters: Counter[str] = Counter()
    usage: Counter[str] = Counter()
    for event in read_events(second):
        counters.update(event.counters_delta)
        usage.update({k: v for k, v in event.usage_delta.items() if isinstance(v, int)})
    assert dict(counters) == {"teacher_generated": 6}
    for name in ("requests_sent", "input_tokens", "output_tokens"):
        assert usage[name] == sum(row["metadata"]["usage"][name] for row in final_rows)
    assert any("4 sample(s) already written" in m for m in messages_of(second, stage="generate"))
