"""Totals stay within what JSON and msgpack carry: deltas are bounded by the schema, totals by the
supervisor's gate, and a file written before the bounds loads with its totals clamped, never dead."""

from __future__ import annotations

import json
import logging

import msgpack
import pytest

from heidi_engine.bus.event import COST_FIELD, MAX_TOTAL, MAX_TOTAL_COST_USD
from heidi_engine.bus.ledger import Ledger
from heidi_engine.bus.state import EndpointUsage, RunState, TeacherSample
from heidi_engine.bus.totals import overflow

HUGE = 2 * (2**64 - 1)  # two deltas of 2**64 - 1, summed by a version without bounds


def spoiled(text: str) -> str:
    """``text`` (JSON) with the cost written as an older version's json.dumps wrote an overflowed one."""
    return text.replace('"estimated_cost_usd":0.0', '"estimated_cost_usd":Infinity')


def test_a_state_file_with_out_of_range_totals_loads_clamped_and_packs(caplog: pytest.LogCaptureFixture) -> None:
    state = RunState(run_id="run_20240215_123456_abc12345")
    state.counters["eval_pass"] = HUGE
    state.counters["test_fail"] = -3
    state.usage["input_tokens"] = HUGE
    name = "http://127.0.0.1:8000/v1"
    record = state.model_dump(mode="json")
    record["teacher_endpoints"] = {name: {"usage": {COST_FIELD: 0.0, "output_tokens": HUGE}, "errors": HUGE}}
    text = spoiled(json.dumps(record, separators=(",", ":")))
    assert "Infinity" in text and str(HUGE) in text
    with caplog.at_level(logging.WARNING):
        loaded = RunState.model_validate_json(text)
    assert loaded.counters["eval_pass"] == MAX_TOTAL and loaded.counters["test_fail"] == 0
    assert loaded.usage["input_tokens"] == MAX_TOTAL and loaded.usage[COST_FIELD] is None
    endpoint = loaded.teacher_endpoints[name]
    assert endpoint.errors == MAX_TOTAL and endpoint.usage["output_tokens"] == MAX_TOTAL
    assert f"eval_pass total was {HUGE}, out of range; loaded as {MAX_TOTAL}" in caplog.text
    msgpack.packb(loaded.model_dump(mode="python"))  # what a snapshot does: no OverflowError


def test_a_ledger_with_out_of_range_totals_loads_clamped(caplog: pytest.LogCaptureFixture) -> None:
    raw = {"counters": {"eval_pass": HUGE}, "usage": {COST_FIELD: float("inf"), "retries": -1},
           "counted": {"eval:1": {"counters": {"eval_pass": HUGE}, "usage": {COST_FIELD: float("nan")},
                                  "known_cost": float("inf")}}}
    with caplog.at_level(logging.WARNING):
        ledger = Ledger.model_validate(raw)
    assert ledger.counters["eval_pass"] == MAX_TOTAL and ledger.usage == {COST_FIELD: None, "retries": 0}
    totals = ledger.totals("eval", 1)
    assert totals.counters == {"eval_pass": MAX_TOTAL} and totals.usage == {} and totals.known_cost == 0.0
    assert "ledger, eval:1" in caplog.text


def test_overflow_names_the_first_total_a_delta_would_pass() -> None:
    counters, usage = {"eval_pass": MAX_TOTAL - 1}, {COST_FIELD: MAX_TOTAL_COST_USD - 1.0, "retries": 0}
    assert overflow(counters, usage, {"eval_pass": 1}, {"retries": 5}) is None
    assert overflow(counters, usage, {"eval_pass": 2}, {}) == "eval_pass"
    assert overflow(counters, usage, {}, {COST_FIELD: 2.0}) == COST_FIELD
    assert overflow(counters, {COST_FIELD: None}, {}, {COST_FIELD: 2.0}) is None  # unknown stays unknown


def test_a_teacher_sample_carries_deltas_bounded_as_an_event_does() -> None:
    name = "http://127.0.0.1:8000/v1"
    with pytest.raises(ValueError, match="delta must be an int in 0"):
        TeacherSample(endpoints={name: EndpointUsage(usage={"input_tokens": 2**40})})
    with pytest.raises(ValueError, match="errors delta must be an int in 0"):
        TeacherSample(endpoints={name: EndpointUsage(errors=2**40)})
    assert EndpointUsage(usage={"input_tokens": 2**40}).usage["input_tokens"] == 2**40  # a total may be larger


def test_a_cost_written_as_an_int_too_large_for_a_float_loads_clamped() -> None:
    huge = "9" * 400  # math.isfinite raises OverflowError on it: it must read as out of range, not crash
    state = RunState.model_validate_json(f'{{"usage": {{"{COST_FIELD}": {huge}}}, "counters": {{"eval_pass": -{huge}}}}}')
    assert state.usage[COST_FIELD] == MAX_TOTAL_COST_USD and state.counters["eval_pass"] == 0
