"""A batch folded at once gives the very state and ledger that folding its events one by one gives: the same
totals (float costs bit for bit, keys in the same order), round, stage, status, error and recent events."""

from __future__ import annotations

import random
from itertools import pairwise
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from heidi_engine.bus.event import COUNTER_NAMES, EVENT_TYPES, LEVELS, STAGES, USAGE_COUNT_NAMES, Event
from heidi_engine.bus.ledger import Ledger, Totals
from heidi_engine.bus.state import RECENT_EVENTS, RunState, apply_events, status_after
from heidi_engine.bus.totals import add_deltas, zero_usage

RUN = "run_20240101_000000_abcdef12"
COST = "estimated_cost_usd"

_counts = st.one_of(st.integers(0, 3), st.integers(0, 2**31))
_costs = st.one_of(
    st.none(),
    st.sampled_from([0.1, 0.2, 0.3, 1e-9, 1e6, 0.0, -0.0, 1 / 3, 7, 0]),
    st.floats(0, 1e6, allow_nan=False, allow_infinity=False),
)


@st.composite
def _events(draw: st.DrawFn) -> Event:
    level = draw(st.sampled_from(LEVELS))
    usage: dict[str, Any] = draw(st.dictionaries(st.sampled_from(USAGE_COUNT_NAMES), _counts, max_size=3))
    if draw(st.booleans()):
        # The cost's place among the names is drawn too: a fresh total takes them in the events' order.
        items = list(usage.items())
        at = draw(st.integers(0, len(items)))
        usage = dict([*items[:at], (COST, draw(_costs)), *items[at:]])
    return Event.model_validate({
        "ts": f"2024-01-01T00:00:{draw(st.integers(0, 59)):02d}.000Z",
        "run_id": RUN,
        "round": draw(st.integers(0, 2)),
        "stage": draw(st.sampled_from(STAGES) | st.just("generate")),
        "level": level,
        "event_type": draw(st.sampled_from(EVENT_TYPES) | st.just("progress")),
        "message": draw(st.sampled_from(["", "step", "it broke"])),
        "counters_delta": draw(st.dictionaries(st.sampled_from(COUNTER_NAMES), _counts, max_size=3)),
        "usage_delta": usage,
        "error": draw(st.sampled_from([None, "boom"])) if level == "error" else None,
    })


# What a run may already hold: nothing, an unknown cost, totals read from a file as floats or an int cost,
# names missing from its totals, a full list of recent events.
_STATES: list[dict[str, Any]] = [
    {},
    {"run_id": RUN, "status": "running", "started_at": "2024-01-01T00:00:00.000Z", "usage": {**zero_usage(), COST: None}},
    {"usage": {**zero_usage(), "input_tokens": 1 / 3, COST: 0.1}, "error": "earlier"},
    {"counters": {"teacher_generated": 3}, "usage": {"requests_sent": 2}, "current_stage": "train"},
    {"usage": {**zero_usage(), COST: 0.7}, "recent_events": [{"n": i} for i in range(RECENT_EVENTS - 5)]},
    {"usage": {**zero_usage(), COST: 3}},
    {"usage": dict.fromkeys(USAGE_COUNT_NAMES, 1)},
]
_LEDGERS: list[dict[str, Any]] = [
    {},
    {"run_id": RUN, "status": "running", "started_at": "2024-01-01T00:00:00.000Z", "usage": {**zero_usage(), COST: None},
     "completed": [(0, "generate")]},
    {"usage": {**zero_usage(), "input_tokens": 1 / 3, COST: 0.1},
     "counted": {"generate:1": {"counters": {"teacher_generated": 1}, "usage": {"input_tokens": 1 / 3, COST: 0.2},
                                "known_cost": 0.2}}},
    {"counters": {"teacher_generated": 3}, "usage": {"requests_sent": 2},
     "counted": {"validate:2": {"counters": {"validated_ok": 2}, "usage": {COST: 7}, "known_cost": 7.0}}},
    {"usage": {**zero_usage(), COST: 0.7}, "counted": {"generate:0": {"usage": {COST: 0.7}, "known_cost": 0.7}}},
    {"usage": dict.fromkeys(USAGE_COUNT_NAMES, 1),
     "counted": {"generate:0": {"usage": {"input_tokens": 1 / 3}}, "generate:1": {"counters": {"test_pass": 1.0}}}},
]

_batches = st.lists(_events(), max_size=60)


def _naive_state(state: RunState, event: Event, record: dict[str, Any]) -> None:
    """One event folded as the reducer did before batches were summed."""
    if state.run_id is None:
        state.run_id = event.run_id
    state.recent_events.append(record)
    del state.recent_events[:-RECENT_EVENTS]
    state.event_count += 1
    state.last_event_ts = state.updated_at = event.ts
    if event.stage == "external":
        return
    state.current_round = event.round
    add_deltas(state.counters, state.usage, event.counters_delta, event.usage_delta)
    if event.event_type != "progress":
        state.teacher_outage = None
        if event.event_type == "stage_start":
            state.current_stage = event.stage
        status = status_after(event.event_type, event.level)
        if status is not None:
            state.status = status
            if status == "running":
                state.started_at = state.started_at or event.ts
    if event.level == "error":
        state.error = event.error or event.message


def _naive_ledger(ledger: Ledger, record: dict[str, Any]) -> None:
    """One record folded as the ledger did before batches were summed."""
    ledger.run_id = ledger.run_id or record["run_id"]
    counters, usage, stage, round_no = record["counters_delta"], record["usage_delta"], record["stage"], record["round"]
    if counters or usage:
        add_deltas(ledger.counters, ledger.usage, counters, usage)
        ledger.counted.setdefault(f"{stage}:{round_no}", Totals()).add(counters, usage)
    ledger.note(record)  # per record already: only the sums are what batching changed
    ledger.event_count += 1
    ledger.current_round = round_no
    ledger.last_event_ts = record["ts"]


def _same(batched: RunState | Ledger, reference: RunState | Ledger) -> None:
    assert batched.model_dump() == reference.model_dump()
    # JSON tells 0.0 from -0.0, every bit of a float (repr round-trips) and the order of the keys.
    assert batched.model_dump_json() == reference.model_dump_json()


@settings(max_examples=200, deadline=None)
@given(_batches, st.sampled_from(_STATES), st.sampled_from(_LEDGERS))
def test_a_batch_folds_as_its_events_one_by_one(events: list[Event], start: dict[str, Any], begun: dict[str, Any]) -> None:
    batch = [(event, event.to_record()) for event in events]
    state, one_by_one, naive = (RunState.model_validate(start) for _ in range(3))
    apply_events(state, batch)
    for pair in batch:
        apply_events(one_by_one, [pair])
        _naive_state(naive, *pair)
    _same(state, naive)
    _same(one_by_one, naive)

    ledger, single, reference = (Ledger.model_validate(begun) for _ in range(3))
    ledger.add_many([record for _event, record in batch])
    for _event, record in batch:
        single.add(record)
        _naive_ledger(reference, record)
    _same(ledger, reference)
    _same(single, reference)


@settings(max_examples=100, deadline=None)
@given(_batches, st.lists(st.integers(0, 60), max_size=6), st.sampled_from(_STATES), st.sampled_from(_LEDGERS))
def test_a_batch_split_in_chunks_folds_as_the_whole(
    events: list[Event], cuts: list[int], start: dict[str, Any], begun: dict[str, Any]
) -> None:
    batch = [(event, event.to_record()) for event in events]
    bounds = [0, *sorted(min(cut, len(batch)) for cut in cuts), len(batch)]
    whole, chunked = RunState.model_validate(start), RunState.model_validate(start)
    ledger, pieces = Ledger.model_validate(begun), Ledger.model_validate(begun)
    apply_events(whole, batch)
    ledger.add_many([record for _event, record in batch])
    for first, end in pairwise(bounds):
        apply_events(chunked, batch[first:end])
        pieces.add_many([record for _event, record in batch[first:end]])
    _same(chunked, whole)
    _same(pieces, ledger)


def test_float_costs_add_in_the_batchs_order_not_summed_apart() -> None:
    costs = [0.1, 0.2, 1e-9, 0.3, 1.0, 0.1]
    stages = ["generate", "validate", "generate", "train", "generate", "validate"]
    events = [Event.model_validate({"run_id": RUN, "round": 1, "stage": stage, "event_type": "progress",
                                    "usage_delta": {COST: cost}}) for stage, cost in zip(stages, costs, strict=True)]
    state = apply_events(RunState(), [(event, event.to_record()) for event in events])
    ledger = Ledger()
    ledger.add_many([event.to_record() for event in events])
    expected = 0.0
    for cost in costs:
        expected += cost
    assert state.usage[COST] == ledger.usage[COST] == expected
    assert expected != ((((0.1 + 1e-9) + 1.0) + 0.2) + 0.1) + 0.3  # each stage's costs, then the next's
    assert ledger.totals("generate", 1).known_cost == ((0.0 + 0.1) + 1e-9) + 1.0
    assert ledger.totals("validate", 1).usage[COST] == (0 + 0.2) + 0.1


def test_totals_a_file_holds_as_floats_are_added_event_by_event() -> None:
    third = 1 / 3
    assert (third + 1) + 1 != third + 2  # why a float total cannot take a batch's int sum
    assert (0.1 + 0.2) + 0.3 != 0.1 + (0.2 + 0.3)  # nor a float total the batch's float sum
    events = [Event.model_validate({"run_id": RUN, "round": round_no, "stage": "generate", "event_type": "progress",
                                    "usage_delta": {"input_tokens": 1, COST: cost}})
              for round_no in (1, 2) for cost in (0.2, 0.3)]
    state = RunState.model_validate({"usage": {**zero_usage(), "input_tokens": third, COST: 0.1}})
    apply_events(state, [(event, event.to_record()) for event in events])
    ledger = Ledger.model_validate({
        "usage": {**zero_usage(), "input_tokens": third, COST: 0.1},
        "counted": {"generate:1": {"usage": {"input_tokens": third, COST: 0.1}, "known_cost": 0.1},
                    "generate:2": {"usage": {"input_tokens": 3, COST: 0.1}, "known_cost": 0.1}},
    })
    ledger.add_many([event.to_record() for event in events])
    assert state.usage["input_tokens"] == ledger.usage["input_tokens"] == (((third + 1) + 1) + 1) + 1
    assert state.usage[COST] == ledger.usage[COST] == (((0.1 + 0.2) + 0.3) + 0.2) + 0.3
    for round_no, tokens in ((1, (third + 1) + 1), (2, 5)):
        totals = ledger.totals("generate", round_no)
        assert totals.usage == {"input_tokens": tokens, COST: (0.1 + 0.2) + 0.3}
        assert totals.known_cost == (0.1 + 0.2) + 0.3


def test_a_batch_longer_than_the_recent_events_folds_as_its_events_one_by_one() -> None:
    rng = random.Random(3)
    events = [Event.model_validate({
        "ts": f"2024-01-01T00:{i // 60:02d}:{i % 60:02d}.000Z", "run_id": RUN, "round": i // 150,
        "stage": rng.choice(STAGES), "event_type": rng.choice(["progress"] * 8 + list(EVENT_TYPES)),
        "counters_delta": {rng.choice(COUNTER_NAMES): rng.randint(0, 5)},
        "usage_delta": {"input_tokens": rng.randint(0, 2**31), COST: rng.choice([None, 0.1, rng.random()])}
        if rng.random() < 0.3 else {},
    }) for i in range(3 * RECENT_EVENTS)]
    batch = [(event, event.to_record()) for event in events]
    state, naive, ledger, reference = RunState(), RunState(), Ledger(), Ledger()
    apply_events(state, batch)
    ledger.add_many([record for _event, record in batch])
    for event, record in batch:
        _naive_state(naive, event, record)
        _naive_ledger(reference, record)
    assert len(state.recent_events) == RECENT_EVENTS
    _same(state, naive)
    _same(ledger, reference)
