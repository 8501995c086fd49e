"""The ingress gate: an agent's events count only for the active run and its own kinds; the rest is
refused and counted by reason."""

from __future__ import annotations

from heidi_engine.bus.event import Event
from heidi_engine.bus.state import RunState
from heidi_engine.supervisor.ingress import IngressGate

RUN = "run_20240215_123456_abc12345"
OTHER = "run_20240215_123456_def12345"


def event(run_id: str, event_type: str = "progress") -> Event:
    return Event(run_id=run_id, stage="generate", event_type=event_type, message=event_type)


def test_events_of_the_active_run_pass_in_order_and_the_rest_are_counted() -> None:
    gate = IngressGate()
    state = RunState(run_id=RUN, status="running")
    sent = [event(RUN), event(RUN, "stage_end"), event(OTHER), event(RUN, "pipeline_complete"), event(RUN, "error")]
    kept = gate.events(state, sent)
    assert kept == [sent[0], sent[4]]
    assert gate.refused == {"supervisor_only": 2, "wrong_run": 1}


def test_nothing_counts_once_the_run_has_ended() -> None:
    gate = IngressGate()
    state = RunState(run_id=RUN, status="completed")
    assert gate.events(state, [event(RUN)]) == []
    assert gate.foreign(state, RUN)
    assert not gate.foreign(RunState(run_id=RUN, status="paused"), RUN)
    gate.refuse("system_sample")
    assert gate.refused == {"wrong_run": 2, "system_sample": 1}
