"""The wire codec: round trips, the decoding order, and that no input ever escapes as anything but DecodeError."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from heidi_engine.bus.codec import MAX_MESSAGE_BYTES, DecodeError, decode, encode, sign
from heidi_engine.bus.event import Event
from heidi_engine.bus.message import AgentStatus, Command, ControlBroadcast, Heartbeat, Reply
from heidi_engine.bus.state import StatusPatch, TrainerSample

KEY = bytes(range(32))
RUN = "run_20240215_123456_abc12345"


def frames_of(body: object, kind: str, **kw: object) -> list[bytes]:
    return encode(KEY, kind, body, sender="test", session="s1", **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("kind,body", [
    ("event", Event(run_id=RUN, stage="train", event_type="progress", message="hi", counters_delta={"train_step": 1})),
    ("sample", TrainerSample(round=1, step=3, total=10, loss=0.5, learning_rate=1e-4)),
    ("state", AgentStatus(stage="train", pid=42, phase="parked")),
    ("state", Heartbeat(seq=7, status="running")),
    ("state", StatusPatch(status="paused", pause_requested=True)),
    ("control", ControlBroadcast(action="pause")),
    ("command", Command(id="abc", name="start", args={"overrides": {"ROUNDS": 2}})),
    ("reply", Reply(id="abc", ok=False, error="nope")),
])
def test_round_trip(kind: str, body: object) -> None:
    message = decode(frames_of(body, kind, supervisor="sup", seq=5), KEY)
    assert message.body == ([body] if kind == "event" else body)  # events travel as batches
    assert message.header.kind == kind and message.header.seq == 5 and message.header.supervisor == "sup"
    assert message.topic == kind.encode()


def test_wrong_key_refused() -> None:
    frames = frames_of(ControlBroadcast(action="stop"), "control")
    with pytest.raises(DecodeError) as err:
        decode(frames, b"other key")
    assert err.value.reason == "bad_signature"


def test_tampered_body_refused() -> None:
    frames = frames_of(Command(id="a", name="ping"), "command")
    frames[2] = msgpack.packb({"id": "a", "name": "shutdown", "args": {}})
    with pytest.raises(DecodeError, match="bad_signature"):
        decode(frames, KEY)


def test_frame_boundaries_are_signed() -> None:
    topic, header, body, _ = frames_of(Command(id="a", name="ping"), "command")
    # Moving bytes between frames keeps the concatenation but must break the signature.
    moved = [topic + header[:1], header[1:], body]
    moved.append(sign(KEY, topic, header, body))
    with pytest.raises(DecodeError, match="bad_signature"):
        decode(moved, KEY)


def test_reordered_frames_refused() -> None:
    frames = frames_of(Command(id="a", name="ping"), "command")
    with pytest.raises(DecodeError):
        decode([frames[1], frames[0], frames[2], frames[3]], KEY)


def test_wrong_frame_count_and_oversize() -> None:
    frames = frames_of(Command(id="a", name="ping"), "command")
    with pytest.raises(DecodeError, match="bad_frames"):
        decode(frames[:3], KEY)
    big = [b"event", b"x" * (MAX_MESSAGE_BYTES + 1), b"", b""]
    with pytest.raises(DecodeError, match="oversize"):
        decode(big, KEY)


def test_signed_garbage_body_is_bad_msgpack_or_schema() -> None:
    topic, header, _, _ = frames_of(Command(id="a", name="ping"), "command")
    for body, reason in ((b"\xc1\xc1", "bad_msgpack"), (msgpack.packb({"id": "a"}), "bad_schema"),
                         (msgpack.packb([1, 2, 3]), "bad_schema")):
        with pytest.raises(DecodeError) as err:
            decode([topic, header, body, sign(KEY, topic, header, body)], KEY)
        assert err.value.reason == reason


def test_schema_error_names_the_field() -> None:
    topic, header, _, _ = frames_of(Event(run_id=RUN, stage="train", event_type="progress"), "event")
    bad = msgpack.packb([{"run_id": RUN, "stage": "nope", "event_type": "progress"}])
    with pytest.raises(DecodeError, match="stage"):
        decode([topic, header, bad, sign(KEY, topic, header, bad)], KEY)


def test_topic_must_match_kind() -> None:
    _, header, body, _ = frames_of(Command(id="a", name="ping"), "command")
    with pytest.raises(DecodeError, match="topic"):
        decode([b"event", header, body, sign(KEY, b"event", header, body)], KEY)


# -- properties ------------------------------------------------------------------------------------

@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=200), max_size=6))
def test_arbitrary_frames_never_raise_anything_else(frames: list[bytes]) -> None:
    try:
        decode(frames, KEY)
    except DecodeError as exc:
        assert exc.reason


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.binary(max_size=300))
def test_validly_signed_arbitrary_bytes_never_raise_anything_else(header: bytes, body: bytes) -> None:
    try:
        decode([b"event", header, body, sign(KEY, b"event", header, body)], KEY)
    except DecodeError as exc:
        assert exc.reason in {"bad_msgpack", "bad_header", "bad_version", "bad_schema", "bad_batch", "oversize"}


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=1, max_value=400))
def test_truncated_message_refused(cut: int) -> None:
    frames = frames_of(Event(run_id=RUN, stage="eval", event_type="progress", message="x" * 100), "event")
    joined = b"".join(frames)
    cut = min(cut, len(joined) - 1)
    truncated = [frames[0], frames[1], frames[2][: max(0, len(frames[2]) - cut)], frames[3]]
    with pytest.raises(DecodeError):
        decode(truncated, KEY)


json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-2**31, 2**31), st.text(max_size=30),
                      st.floats(allow_nan=False, allow_infinity=False))
json_value = st.recursive(json_leaf, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4), max_leaves=15)


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=1, max_size=64), st.text(min_size=1, max_size=40), st.dictionaries(st.text(max_size=10), json_value, max_size=5))
def test_command_round_trip_property(req_id: str, name: str, args: dict[str, object]) -> None:
    command = Command(id=req_id, name=name, args=args)
    assert decode(frames_of(command, "command"), KEY).body == command


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=600), st.integers(0, 1000), st.dictionaries(st.sampled_from(["train_step", "test_pass", "eval_total"]), st.integers(0, 10**9)))
def test_event_round_trip_property(message: str, round_no: int, counters: dict[str, int]) -> None:
    event = Event(run_id=RUN, round=round_no, stage="validate", event_type="progress", message=message, counters_delta=counters)
    [decoded] = decode(frames_of(event, "event"), KEY).body
    assert decoded == event
    assert len(decoded.message) <= 500


def test_status_patch_keeps_unset_fields_unset() -> None:
    patch = StatusPatch(pause_requested=True)
    decoded = decode(frames_of(patch, "state"), KEY).body
    assert decoded.model_fields_set == {"type", "pause_requested"}
    assert decoded.status is None and decoded.pause_requested is True


@settings(max_examples=200, deadline=None)
@given(st.permutations(range(4)), st.binary(min_size=1, max_size=64))
def test_reordered_frames_or_wrong_key_never_pass(order: list[int], other_key: bytes) -> None:
    frames = frames_of(Command(id="a", name="shutdown"), "command")
    shuffled = [frames[i] for i in order]
    if order != [0, 1, 2, 3]:
        with pytest.raises(DecodeError):
            decode(shuffled, KEY)
    if other_key != KEY:
        with pytest.raises(DecodeError) as err:
            decode(frames, other_key)
        assert err.value.reason == "bad_signature"


def test_refusals_are_counted_by_reason() -> None:
    from heidi_engine.bus.server import BadMessageLog

    now = [0.0]
    counter = BadMessageLog(clock=lambda: now[0])
    for frames in ([b"x"], frames_of(Command(id="a", name="ping"), "command")[:3]):
        try:
            decode(frames, KEY)
        except DecodeError as exc:
            counter.refuse("control", exc)
    try:
        decode(frames_of(Command(id="a", name="ping"), "command"), b"wrong")
    except DecodeError as exc:
        counter.refuse("control", exc)
    assert counter.counts == {"control:bad_frames": 2, "control:bad_signature": 1}
    assert counter.total == 3


def test_supervisor_egress_event_decodes_to_the_same_event_without_revalidation() -> None:
    event = Event(run_id=RUN, round=2, stage="train", event_type="progress", message="step 3",
                  counters_delta={"train_step": 1}, usage_delta={"estimated_cost_usd": None})
    frames = encode(KEY, "event", [event, event], sender="supervisor", session="s", supervisor="s", seq=9)
    decoded = decode(frames, KEY).body
    assert decoded == [event, event] and decoded[0].to_record() == event.to_record()


def test_agent_events_are_always_validated() -> None:
    topic, header, _, _ = frames_of(Event(run_id=RUN, stage="train", event_type="progress"), "event")
    bad = msgpack.packb([{"run_id": RUN, "stage": "nope", "event_type": "progress"}])
    with pytest.raises(DecodeError, match="bad_schema"):
        decode([topic, header, bad, sign(KEY, topic, header, bad)], KEY)
