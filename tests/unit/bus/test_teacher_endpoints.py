"""A teacher pool in the config and the state: a comma-separated TEACHER_BASE_URL, per-endpoint usage
folded from teacher samples, and names that can never carry a credential."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from heidi_engine.bus.codec import decode_body, pack_body
from heidi_engine.bus.config import ConfigError, load_config
from heidi_engine.bus.ledger import replay
from heidi_engine.bus.state import EndpointUsage, RunState, TeacherSample, apply_sample

A, B = "http://127.0.0.1:8001/v1", "http://127.0.0.1:8002/v1"


def _url(value: str) -> str:
    return load_config(None, env={}, overrides={"TEACHER_BASE_URL": value}).TEACHER_BASE_URL


def test_teacher_base_url_takes_a_comma_separated_pool() -> None:
    assert _url(f"{A}, {B}") == f"{A}, {B}"


@pytest.mark.parametrize(
    ("value", "named"),
    [
        (f"{A},ftp://gpu2:21/v1", "endpoint 2 of 2 ('ftp://gpu2:21/v1')"),
        (f"{A},,{B}", "endpoint 2 of 3 ('')"),
        (f"{A},{A}/", "endpoint 2 of 2 ('http://127.0.0.1:8001/v1/'): listed twice"),
    ],
)
def test_a_bad_endpoint_of_a_pool_is_named(value: str, named: str) -> None:
    with pytest.raises(ConfigError) as refused:
        _url(value)
    assert "TEACHER_BASE_URL" in str(refused.value) and named in str(refused.value), str(refused.value)


def test_naming_a_bad_endpoint_never_shows_a_password() -> None:
    with pytest.raises(ConfigError) as refused:
        _url("https://user:hunter2secret@gpu1:8000/v1,ftp://gpu2/v1")
    assert "endpoint 2 of 2" in str(refused.value) and "hunter2secret" not in str(refused.value)


def test_teacher_samples_fold_into_per_endpoint_totals_and_latest_state() -> None:
    state = RunState()
    first = EndpointUsage(usage={"requests_sent": 2, "input_tokens": 10, "estimated_cost_usd": 0.5}, errors=1,
                          in_flight=2, latency_p50_s=0.2, latency_p95_s=0.4)  # fmt: skip
    apply_sample(state, TeacherSample(endpoints={A: first}))
    later = EndpointUsage(usage={"requests_sent": 3, "estimated_cost_usd": None}, in_flight=0, out_for_s=4.0)
    apply_sample(state, TeacherSample(endpoints={A: later, B: EndpointUsage(usage={"requests_sent": 1})}))
    a = state.teacher_endpoints[A]
    assert (a.usage["requests_sent"], a.usage["input_tokens"], a.usage["estimated_cost_usd"]) == (5, 10, None)
    assert (a.errors, a.in_flight, a.out_for_s, a.latency_p50_s) == (1, 0, 4.0, None)
    assert state.teacher_endpoints[B].usage["estimated_cost_usd"] == 0.0
    again = RunState.model_validate_json(state.model_dump_json())  # state.json keeps them
    assert again.teacher_endpoints == state.teacher_endpoints


@pytest.mark.parametrize("name", ["http://user:pw@gpu:8000/v1", "http://gpu:8000/v1?key=sk-1", "gpu:8000", ""])
def test_an_endpoint_name_that_could_carry_a_secret_is_refused(name: str) -> None:
    with pytest.raises(ValidationError):
        TeacherSample(endpoints={name: EndpointUsage()})


def test_bad_usage_in_a_teacher_sample_is_refused_by_name() -> None:
    with pytest.raises(ValidationError, match="unknown usage field 'dollars'"):
        EndpointUsage(usage={"dollars": 1})
    with pytest.raises(ValidationError):
        EndpointUsage(errors=-1)


def test_a_teacher_sample_travels_on_the_bus() -> None:
    sample = TeacherSample(run_id="run_20240101_000000_0123abcd",
                           endpoints={A: EndpointUsage(usage={"requests_sent": 1}, latency_p50_s=0.1)})  # fmt: skip
    assert decode_body("sample", pack_body(sample)) == sample


def test_a_replayed_run_keeps_each_endpoints_totals_from_state_json(tmp_path: Path) -> None:
    saved = RunState(run_id="run_20240101_000000_0123abcd", status="stopped")
    apply_sample(saved, TeacherSample(endpoints={A: EndpointUsage(usage={"requests_sent": 4}, errors=2)}))
    (tmp_path / "state.json").write_text(saved.model_dump_json())
    state = replay(tmp_path)
    assert state.teacher_endpoints[A].usage["requests_sent"] == 4 and state.teacher_endpoints[A].errors == 2
