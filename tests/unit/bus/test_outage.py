"""The teacher's outage on the bus: a strict, bounded wire form, and the reducer that keeps it while parked."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from heidi_engine.bus.codec import decode_body, pack_body
from heidi_engine.bus.event import Event
from heidi_engine.bus.outage import REASON_MAX, TeacherOutage, health_reason
from heidi_engine.bus.state import RunState, TeacherSample, apply_event, apply_sample

RUN = "run_20240215_123456_abc12345"
SINCE = "2024-02-15T12:35:00Z"
KEY = "sk-proj-Q3xv9LmT2aZkR8pWc1NbYh4dJf7GsE0u"


def outage(**fields: Any) -> TeacherOutage:
    base: dict[str, Any] = {"state": "parked", "since": SINCE, "retry_every_s": 30.0,
                            "next_probe_at": "2024-02-15T12:35:30Z", "jobs_waiting": 3, "reason": "HTTP 503"}  # fmt: skip
    return TeacherOutage.model_validate({**base, **fields})


def ev(**fields: Any) -> Event:
    return Event.model_validate({"run_id": RUN, "stage": "generate", "event_type": "progress", "round": 1, **fields})


def parked_state() -> RunState:
    state = RunState(run_id=RUN, status="running", current_stage="generate")
    return apply_sample(state, TeacherSample(endpoints={}, outage=outage()))


def test_an_outage_travels_on_the_bus_in_a_teacher_sample() -> None:
    sample = TeacherSample(run_id=RUN, endpoints={}, outage=outage())
    assert decode_body("sample", pack_body(sample)) == sample


@pytest.mark.parametrize(
    "bad",
    [
        {"since": "yesterday"},
        {"next_probe_at": "2024-02-15 12:35:30"},
        {"retry_every_s": 0},
        {"retry_every_s": float("inf")},
        {"retry_every_s": 1e9},
        {"jobs_waiting": -1},
        {"jobs_waiting": 2**40},
        {"state": "waiting"},
        {"reason": "x" * 9000},
        {"extra": 1},
        {"jobs_waiting": "3"},  # strict: a number is a number
    ],
)
def test_the_wire_form_is_strict_and_bounded(bad: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        outage(**bad)


def test_the_reason_is_redacted_and_cut() -> None:
    said = outage(reason=f"HTTP 401: Incorrect API key provided: {KEY} \x1b[2J" + "y" * 1000).reason
    assert KEY not in said and "\x1b" not in said and len(said) <= REASON_MAX


def test_parked_is_kept_updated_and_cleared_when_a_probe_gets_through() -> None:
    state = parked_state()
    assert state.teacher_outage == outage()
    later = outage(next_probe_at="2024-02-15T12:36:00Z", reason="connection refused")
    apply_sample(state, TeacherSample(endpoints={}, outage=later))
    assert state.teacher_outage == later
    apply_sample(state, TeacherSample(endpoints={}))  # endpoint figures only: says nothing of an outage
    assert state.teacher_outage == later
    apply_event(state, ev(message="generate round 1: 21/44 written, 0 failed", counters_delta={"teacher_generated": 1}))
    assert state.teacher_outage == later  # progress of the parked stage does not end the outage
    apply_sample(state, TeacherSample(endpoints={}, outage=outage(state="recovered", next_probe_at=None)))
    assert state.teacher_outage is None


@pytest.mark.parametrize(
    "boundary",
    [
        {"event_type": "stage_end", "level": "success"},
        {"event_type": "stage_start", "stage": "validate"},
        {"event_type": "pipeline_stop", "stage": "round_start"},
        {"event_type": "error", "level": "warn", "message": "generate agent crashed; restart 1/3 in 1 s"},
    ],
)
def test_a_stage_or_run_boundary_ends_what_the_stage_said(boundary: dict[str, Any]) -> None:
    state = parked_state()
    apply_event(state, ev(**boundary))
    assert state.teacher_outage is None


def test_the_state_round_trips_through_state_json() -> None:
    state = parked_state()
    assert RunState.model_validate_json(state.model_dump_json()).teacher_outage == outage()
    assert RunState.model_validate({"run_id": RUN}).teacher_outage is None  # a state.json of before


def test_health_reason_names_the_supervisors_problem_and_the_teacher() -> None:
    assert health_reason(None, None) is None
    assert health_reason(None, outage()) == f"teacher unreachable since {SINCE}"
    both = health_reason("cannot write state.json: No space left on device", outage())
    assert both == f"cannot write state.json: No space left on device; teacher unreachable since {SINCE}"
