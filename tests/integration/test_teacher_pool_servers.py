"""A teacher pool of loopback fake servers (127.0.0.1): load follows the requests in flight, a server
killed mid-round loses no sample, and the per-endpoint usage adds up to the run's usage.

The generate stage runs in-process (no model, no supervisor); its events and teacher samples are folded
by the real reducer, as every viewer folds them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fakes.openai_server import FakeOpenAIServer
from harness import FileRuntime, SupervisorProc
from test_generate_stage import run

from heidi_engine.agents import generate
from heidi_engine.agents.dataset.samples import read_jsonl_skipping_bad
from heidi_engine.agents.layout import RoundFiles
from heidi_engine.agents.teacher.base import Completion, TeacherError
from heidi_engine.agents.teacher.client import OpenAITeacher
from heidi_engine.agents.teacher.pool import endpoint_name
from heidi_engine.agents.teacher.usage import TeacherUsage
from heidi_engine.bus.config import load_config
from heidi_engine.bus.event import COST_FIELD, USAGE_COUNT_NAMES
from heidi_engine.bus.journal import read_events
from heidi_engine.bus.state import RunState, apply_event, apply_sample

pytestmark = pytest.mark.timeout(120)

Start = Callable[..., SupervisorProc]

MESSAGES = [{"role": "user", "content": "write f"}]


@pytest.fixture
def servers() -> Iterator[list[FakeOpenAIServer]]:
    started = [FakeOpenAIServer().start() for _ in range(3)]
    try:
        yield started
    finally:
        for server in started:
            server.stop()


def _map(teacher: OpenAITeacher, jobs: int, concurrency: int) -> list[Completion | TeacherError]:
    results: list[Completion | TeacherError] = []
    teacher.map(range(jobs), lambda _: MESSAGES, lambda _, r: results.append(r), concurrency=concurrency)
    return results


def test_requests_go_to_the_endpoint_with_fewest_in_flight(servers: list[FakeOpenAIServer]) -> None:
    slow, fast, _ = servers
    slow.latency_s = 1.0  # holds its one request while the fast one answers the rest
    with OpenAITeacher(f"{slow.url},{fast.url}", "fake-teacher", None) as teacher:
        results = _map(teacher, 12, concurrency=2)
        report = {line.name: line for line in teacher.endpoints()}
    assert all(isinstance(r, Completion) for r in results), results
    counts = (len(slow.requests), len(fast.requests))
    assert counts[0] + counts[1] == 12 and counts[0] <= 3 and counts[1] >= 9, counts  # round robin: 6 and 6
    assert report[endpoint_name(slow.url)].usage.requests_sent == counts[0]
    assert report[endpoint_name(fast.url)].usage.requests_sent == counts[1]
    fast_line = report[endpoint_name(fast.url)]
    assert fast_line.latency_p50_s is not None and fast_line.latency_p95_s is not None
    assert sum((line.usage for line in report.values()), TeacherUsage()) == sum(
        (r.usage for r in results if isinstance(r, Completion)), TeacherUsage()
    )


def test_a_failing_server_is_taken_out_and_its_retries_go_elsewhere_without_waiting(
    servers: list[FakeOpenAIServer],
) -> None:
    bad, good, _ = servers
    bad.fallback = ("status", 500)
    sleeps: list[float] = []
    # The clock never moves: once out, the bad server stays out for the whole test.
    with OpenAITeacher(f"{bad.url},{good.url}", "fake-teacher", None, clock=lambda: 0.0,
                       sleep=sleeps.append) as teacher:  # fmt: skip
        results = _map(teacher, 8, concurrency=1)
        report = {line.name: line for line in teacher.endpoints()}
    assert all(isinstance(r, Completion) for r in results), results
    assert sleeps == []  # another server was in every time: no back-off wait
    assert len(bad.requests) == 3 and len(good.requests) == 8  # out after its third failure in a row
    line = report[endpoint_name(bad.url)]
    assert (line.errors, line.usage.requests_sent, line.usage.retries, line.out_for_s) == (3, 3, 3, 1.0)
    assert sum(r.usage.retries for r in results if isinstance(r, Completion)) == 3


def _config(urls: str, **overrides: Any) -> Any:
    values = {"TEACHER_BASE_URL": urls, "SAMPLES_PER_ROUND": 12, "TEACHER_CONCURRENCY": 3, "VAL_RATIO": 0,
              "TEACHER_MODEL": "gpt-4o-mini", **overrides}  # fmt: skip
    return load_config(None, env={}, overrides={k: str(v) for k, v in values.items()})


def test_a_server_killed_mid_round_loses_no_sample_and_usage_adds_up(
    tmp_path: Path, servers: list[FakeOpenAIServer]
) -> None:
    victim = servers[0]
    for server in servers:
        server.latency_s = 0.2  # the victim's second request is still in flight when it dies
    names = [endpoint_name(s.url) for s in servers]  # a stopped server has no URL
    rt = FileRuntime(tmp_path, _config(",".join(s.url for s in servers)), "generate")

    killed = threading.Event()

    def kill() -> None:
        if victim.wait_for_requests(2, timeout_s=20):
            victim.stop()
            killed.set()

    killer = threading.Thread(target=kill, daemon=True)
    killer.start()
    generate.main(rt)  # type: ignore[arg-type]
    killer.join(10)
    assert killed.is_set(), f"the victim got {len(victim.requests)} request(s) only"
    files = RoundFiles.of(tmp_path, 1)
    written = sorted(row["id"] for row in read_jsonl_skipping_bad(files.raw))
    assert written == [f"r1-{i:05d}" for i in range(12)], written
    assert not files.failed.exists(), files.failed.read_text()
    state = RunState()
    for event in read_events(tmp_path):
        apply_event(state, event)
    for sample in rt.samples:
        apply_sample(state, sample)
    endpoints = state.teacher_endpoints
    assert set(endpoints) == set(names)
    assert endpoints[names[0]].errors >= 1, endpoints
    assert state.counters["teacher_generated"] == 12 and state.counters["teacher_failed"] == 0
    for name in USAGE_COUNT_NAMES:
        assert sum(int(e.usage.get(name) or 0) for e in endpoints.values()) == state.usage[name], name
    total_cost = state.usage[COST_FIELD]
    assert isinstance(total_cost, float) and total_cost > 0
    parts = [e.usage.get(COST_FIELD) for e in endpoints.values()]
    assert sum(p for p in parts if isinstance(p, float)) == pytest.approx(total_cost)
    survivors = [len(s.requests) for s in servers[1:]]
    assert min(survivors) >= 1, survivors  # the round completed on the others


def test_under_a_supervisor_each_endpoints_usage_reaches_the_state_and_adds_up(
    start_supervisor: Start, home: Path, servers: list[FakeOpenAIServer]
) -> None:
    urls = ",".join(s.url for s in servers[:2])
    sup, _run_id, final = run(start_supervisor, urls)
    assert final["status"] == "completed", sup.output()
    state = sup.call("snapshot")["state"]
    endpoints, usage = state["teacher_endpoints"], state["usage"]
    assert set(endpoints) == {endpoint_name(s.url) for s in servers[:2]}, sup.output()
    for server in servers[:2]:
        sent = endpoints[endpoint_name(server.url)]["usage"]["requests_sent"]
        assert sent == len(server.requests) >= 1, endpoints
    for name in USAGE_COUNT_NAMES:
        assert sum(e["usage"].get(name, 0) for e in endpoints.values()) == usage[name], name
    parts = [e["usage"][COST_FIELD] for e in endpoints.values()]
    assert sum(parts) == pytest.approx(usage[COST_FIELD])


def test_an_error_from_a_pool_names_the_server_that_gave_it(servers: list[FakeOpenAIServer]) -> None:
    bad, good, _ = servers
    bad.fallback = ("status", 404, {}, {"error": {"message": "The model `m` does not exist."}})
    good.fallback = bad.fallback
    with OpenAITeacher(f"{bad.url},{good.url}", "m", None, max_retries=0) as teacher:
        results = _map(teacher, 2, concurrency=2)
    reasons = sorted(r.reason for r in results if isinstance(r, TeacherError))
    assert reasons == sorted(f"HTTP 404: The model `m` does not exist. (at {endpoint_name(s.url)})"
                             for s in (bad, good)), reasons  # fmt: skip
