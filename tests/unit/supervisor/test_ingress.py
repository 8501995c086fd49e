"""The ingress gate: an agent's events count only for the active run and its own kinds; the rest is
refused and counted by reason."""

from __future__ import annotations

from heidi_engine.bus.event import MAX_TOTAL, MAX_TOTAL_COST_USD, Event
from heidi_engine.bus.state import EndpointUsage, RunState, TeacherSample
from heidi_engine.supervisor.ingress import IngressGate
from heidi_engine.supervisor.intake import records_of

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


def test_a_round_past_the_last_one_and_a_total_past_its_bound_are_refused() -> None:
    gate = IngressGate()
    state = RunState(run_id=RUN, status="running", total_rounds=2)
    state.counters["eval_pass"] = MAX_TOTAL - 10
    state.usage["estimated_cost_usd"] = MAX_TOTAL_COST_USD - 1.0
    late = Event(run_id=RUN, round=4, stage="generate", event_type="progress")
    last = Event(run_id=RUN, round=3, stage="generate", event_type="progress")
    fits = Event(run_id=RUN, stage="eval", event_type="progress", counters_delta={"eval_pass": 6})
    over = Event(run_id=RUN, stage="eval", event_type="progress", counters_delta={"eval_pass": 5})  # 6 + 5 > 10
    costly = Event(run_id=RUN, stage="generate", event_type="progress", usage_delta={"estimated_cost_usd": 2.0})
    assert gate.events(state, [late, last, fits, over, costly]) == [last, fits]
    assert gate.refused == {"bad_round": 1, "bad_value": 2}
    assert state.counters["eval_pass"] == MAX_TOTAL - 10  # the gate only looks; the state adds what it kept


def test_a_teacher_sample_that_would_pass_an_endpoint_total_is_refused() -> None:
    gate = IngressGate()
    state = RunState(run_id=RUN, status="running")
    name = "http://127.0.0.1:8000/v1"
    state.teacher_endpoints[name] = EndpointUsage(usage={"input_tokens": MAX_TOTAL - 1}, errors=MAX_TOTAL)
    small = TeacherSample(run_id=RUN, endpoints={name: EndpointUsage(usage={"input_tokens": 1})})
    assert gate.sample_fits(state, small)
    for delta in (EndpointUsage(usage={"input_tokens": 2}), EndpointUsage(errors=1)):
        assert not gate.sample_fits(state, TeacherSample(run_id=RUN, endpoints={name: delta}))
    assert gate.refused == {"bad_value": 2}


def test_totals_count_what_was_kept_since_begin_though_the_state_has_not_taken_it_yet() -> None:
    gate = IngressGate()
    state = RunState(run_id=RUN, status="running", total_rounds=1)
    state.counters["eval_pass"] = MAX_TOTAL - 10
    six = Event(run_id=RUN, stage="eval", event_type="progress", counters_delta={"eval_pass": 6})
    gate.begin()
    assert gate.events(state, [six]) == [six]
    assert gate.events(state, [six]) == []  # two messages of one take: 12 more would pass the bound
    assert gate.refused == {"bad_value": 1}
    gate.begin()  # the next take reads the state again (which, here, never took the first six)
    assert gate.events(state, [six]) == [six]


def test_a_sample_of_a_round_past_the_last_one_is_refused() -> None:
    gate = IngressGate()
    state = RunState(run_id=RUN, status="running", total_rounds=2)
    assert gate.round_fits(state, 3, "a trainer sample")
    assert not gate.round_fits(state, 4, "an eval sample")
    assert gate.refused == {"bad_round": 1}


def test_an_external_trainer_counts_nothing_into_the_run() -> None:
    gate = IngressGate()
    state = RunState(run_id=RUN, status="running", total_rounds=1)
    said = Event(run_id=RUN, stage="external", event_type="progress", message="x: trained to step 10")
    counting = Event(run_id=RUN, stage="external", event_type="progress", message="x",
                     counters_delta={"train_step": 10})  # fmt: skip
    assert gate.events(state, [said, counting]) == [said]
    assert gate.refused == {"external_counts": 1}


def test_the_records_of_the_kept_events_follow_them_whichever_the_gate_refused() -> None:
    gate = IngressGate()
    state = RunState(run_id=RUN, status="running")
    sent = [event(RUN), event(OTHER), event(RUN, "stage_end"), event(RUN, "error"), event(OTHER), event(RUN)]
    records = [{"n": n} for n in range(len(sent))]
    kept = gate.events(state, sent)
    out: list[dict[str, object]] = []
    records_of(records, sent, kept, out)
    assert out == [{"n": 0}, {"n": 3}, {"n": 5}]
    records_of(records, sent, sent, out)
    assert out[3:] == records
    # events validated one by one carry no records: each kept one's own
    records_of(None, sent, kept, out)
    assert out[-3:] == [e.to_record() for e in kept]
