"""Wire version 2: event batches under one signature, per-event refusals, limits, and version refusals."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from heidi_engine.bus.codec import (
    BATCH_MAX_EVENTS,
    PROTOCOL_VERSION,
    DecodeError,
    decode,
    encode,
    join_packed,
    pack_body,
    pack_events,
    sign,
    unpack_batch,
    validate_events,
)
from heidi_engine.bus.event import Event
from heidi_engine.bus.ledger import Ledger
from heidi_engine.bus.message import Command
from heidi_engine.bus.state import RunState, apply_event, apply_events

KEY = bytes(range(32))
RUN = "run_20240215_123456_abc12345"


def event(i: int, **kw: object) -> Event:
    fields: dict[str, object] = {"run_id": RUN, "stage": "generate", "event_type": "progress",
                                 "message": f"sample {i}", "counters_delta": {"teacher_generated": 1}}
    return Event.model_validate({**fields, **kw})


def test_a_batch_is_one_frame_set_with_one_signature() -> None:
    events = [event(i) for i in range(300)]
    frames = encode(KEY, "event", events, sender="agent", session="s")
    assert len(frames) == 4 and msgpack.unpackb(frames[1])["v"] == PROTOCOL_VERSION == 2
    assert decode(frames, KEY).body == events


def test_join_packed_equals_packing_the_array() -> None:
    for n in (1, 15, 16, 300, 70_000):
        records = [{"i": i} for i in range(n)]
        assert join_packed([pack_body(r) for r in records]) == pack_events(records)


@pytest.mark.parametrize("version", [1, 3, "2"])
def test_another_wire_version_is_refused_naming_both(version: object) -> None:
    topic, header, body, _ = encode(KEY, "event", event(0), sender="agent", session="s")
    old = msgpack.unpackb(header)
    old["v"] = version
    head = msgpack.packb(old)
    with pytest.raises(DecodeError) as err:
        decode([topic, head, body, sign(KEY, topic, head, body)], KEY)
    assert err.value.reason == "bad_version"
    assert f"wire version {version}" in str(err.value) and f"version {PROTOCOL_VERSION}" in str(err.value)


def test_a_v1_header_laid_out_differently_is_still_a_version_refusal() -> None:
    head = msgpack.packb({"v": 1, "kind": "event", "sender": "old"})
    body = pack_body(event(0))
    with pytest.raises(DecodeError, match="bad_version"):
        decode([b"event", head, body, sign(KEY, b"event", head, body)], KEY)


def test_one_bad_event_is_refused_and_the_others_go_on() -> None:
    objs = [event(0).model_dump(), {"run_id": RUN, "stage": "nope", "event_type": "progress"}, event(2).model_dump()]
    out = validate_events(objs)
    assert [type(o).__name__ for o in out] == ["Event", "DecodeError", "Event"]
    bad = out[1]
    assert isinstance(bad, DecodeError) and bad.reason == "bad_schema" and "stage" in bad.detail


def test_not_a_batch_empty_or_too_long_is_refused() -> None:
    for body, reason in ((msgpack.packb({"run_id": RUN}), "bad_batch"), (msgpack.packb([]), "bad_batch"),
                         (msgpack.packb([{}] * (BATCH_MAX_EVENTS + 1)), "oversize")):
        with pytest.raises(DecodeError) as err:
            unpack_batch(body)
        assert err.value.reason == reason


def test_per_event_size_limit_inside_a_batch() -> None:
    small, large = pack_body({"m": "x" * 100}), pack_body({"m": "y" * 5000})
    assert len(unpack_batch(join_packed([small] * 100), max_event_bytes=1000)) == 100
    with pytest.raises(DecodeError, match="event 2 of the batch is larger than 1000 bytes"):
        unpack_batch(join_packed([small, small, large]), max_event_bytes=1000)
    with pytest.raises(DecodeError) as err:
        unpack_batch(join_packed([small] * 20)[:-3], max_event_bytes=1000)
    assert err.value.reason == "bad_msgpack"


def test_a_list_body_is_refused_for_single_body_kinds() -> None:
    with pytest.raises(ValueError, match="one body"):
        encode(KEY, "command", [Command(id="a", name="ping")], sender="x", session="s")  # type: ignore[list-item]


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["progress", "stage_start", "pipeline_start", "pipeline_stop", "error"]),
                          st.sampled_from(["info", "warn", "error"]), st.integers(0, 5)), min_size=1, max_size=30),
       st.integers(1, 7))
def test_a_batch_folds_to_the_state_of_one_event_at_a_time(spec: list[tuple[str, str, int]], cut: int) -> None:
    events = [event(i, event_type=t, level=lv, round=r, stage="train", error="boom" if lv == "error" else None)
              for i, (t, lv, r) in enumerate(spec)]
    one, batched = RunState(), RunState()
    for e in events:
        apply_event(one, e)
    for start in range(0, len(events), cut):
        apply_events(batched, [(e, e.to_record()) for e in events[start:start + cut]])
    assert batched == one


def test_records_are_what_model_dump_gives_in_the_same_order() -> None:
    events = [event(0), event(1, level="error", error="boom", artifact_paths=["a/b.json"]),
              event(2, usage_delta={"estimated_cost_usd": None, "requests_sent": 2})]
    wire = decode(encode(KEY, "event", events, sender="supervisor", session="s", supervisor="s", seq=1), KEY).body
    for original, trusted in zip(events, wire, strict=True):
        dumped = original.model_dump()
        if dumped["error"] is None:
            del dumped["error"]
        for record in (original.to_record(), trusted.to_record()):
            assert record == dumped and list(record) == list(dumped)
        assert original.to_record()["counters_delta"] is not original.counters_delta


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["progress", "stage_start", "stage_end", "pipeline_start", "pipeline_stop"]),
                          st.sampled_from(["info", "success", "error"]), st.integers(0, 3)), min_size=1, max_size=20))
def test_the_ledger_folds_a_written_chunk_as_it_folds_each_record(spec: list[tuple[str, str, int]]) -> None:
    records = [event(i, event_type=t, level=lv, round=r, stage="eval", error="boom" if lv == "error" else None,
                     usage_delta={"requests_sent": i}).to_record() for i, (t, lv, r) in enumerate(spec)]
    one, many = Ledger(), Ledger()
    for record in records:
        one.add(record)
    many.add_many(records)
    assert many == one and many.event_count == len(records)
