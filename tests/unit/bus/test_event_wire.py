"""The event's fast path (msgspec) against the model (pydantic): the same corpus of valid and malformed
events through both, identical records and identical verdicts (a refusal's reason and words come from
the model: the fast path only ever accepts, or hands the batch back)."""

from __future__ import annotations

import math
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from heidi_engine.bus.codec import BATCH_MAX_EVENTS, DecodeError, unpack_batch, validate_events
from heidi_engine.bus.event import COUNTER_NAMES, MAX_DELTA, RAW_TEXT_MAX, USAGE_NAMES, Event
from heidi_engine.bus.event_wire import decode_batch, event_record, pack_record, pack_records
from heidi_engine.bus.server import INGRESS_MAX_BYTES

RUN = "run_20240215_123456_abc12345"
TS = "2024-02-15T12:34:56.789Z"


def ev(**fields: Any) -> dict[str, Any]:
    """A valid event's fields, ``fields`` replacing (or, as ``None`` under ``drop``, removing) some."""
    base: dict[str, Any] = {
        "event_version": "1.0", "ts": TS, "run_id": RUN, "round": 1, "stage": "generate", "level": "info",
        "event_type": "progress", "message": "made 3 samples", "counters_delta": {"teacher_generated": 3},
        "usage_delta": {}, "artifact_paths": [],
    }
    for name in fields.pop("drop", ()):
        del base[name]
    base.update(fields)
    return base


VALID = [
    ev(),
    ev(drop=("event_version", "round", "level", "message", "counters_delta", "usage_delta", "artifact_paths")),
    ev(level="error", event_type="error", error="teacher timed out"),
    ev(level="error", error=None),
    ev(message="key sk-proj-" + "a" * 40 + " leaked"),
    ev(message="\x1b[31mred\x1b[0m é ü 漢字 \U0001f600 " * 20),
    ev(message="x" * RAW_TEXT_MAX),
    ev(level="error", error="Authorization: Bearer abcdefghijklmnopqrstuvwxyz012345 " * 10),
    ev(usage_delta={"requests_sent": 1, "input_tokens": 120, "output_tokens": 80, "estimated_cost_usd": 0.0012}),
    ev(usage_delta={"estimated_cost_usd": None, "retries": 0}),
    ev(usage_delta={"estimated_cost_usd": 3}),
    ev(counters_delta={name: MAX_DELTA for name in COUNTER_NAMES}),
    ev(artifact_paths=["data/round_1/samples.jsonl", "out/adapter/adapter_model.safetensors"]),
    ev(artifact_paths=["data/sk-proj-" + "b" * 40 + "/x.jsonl"]),
    ev(artifact_paths=["a/" + "sk-ant-" + "c" * 90]),
    ev(stage="external", counters_delta={}),
    ev(round=100_000, ts="2024-02-15T12:34:56Z"),
    ev(ts="2024-02-15T12:34:56.123456Z"),
]

MALFORMED = [
    ev(event_version="2.0"), ev(event_version=1.0), ev(ts="2024-02-15 12:34:56Z"), ev(ts=TS + "\n"),
    ev(ts="2024-02-15T12:34:56.1234567Z"), ev(ts=1708000000), ev(run_id="run_1"), ev(run_id=RUN + "\n"),
    ev(run_id=RUN.encode()), ev(round=-1), ev(round=100_001), ev(round=True), ev(round=1.0), ev(round="1"),
    ev(stage="deploy"), ev(level="debug"), ev(event_type="pipeline_crash"), ev(message=None), ev(message=5),
    ev(message=b"bytes"), ev(message="x" * (RAW_TEXT_MAX + 1)), ev(error="not an error level"),
    ev(level="error", error="y" * (RAW_TEXT_MAX + 1)), ev(level="error", error=7),
    ev(counters_delta={"made_up": 1}), ev(counters_delta={"train_step": -1}),
    ev(counters_delta={"train_step": MAX_DELTA + 1}), ev(counters_delta={"train_step": True}),
    ev(counters_delta={"train_step": 1.0}), ev(counters_delta={"train_step": None}), ev(counters_delta=[1]),
    ev(counters_delta={1: 1}), ev(usage_delta={"dollars": 1}), ev(usage_delta={"retries": 1.5}),
    ev(usage_delta={"retries": -1}), ev(usage_delta={"retries": True}), ev(usage_delta={"estimated_cost_usd": -0.1}),
    ev(usage_delta={"estimated_cost_usd": math.nan}), ev(usage_delta={"estimated_cost_usd": math.inf}),
    ev(usage_delta={"estimated_cost_usd": 2e6}), ev(usage_delta={"estimated_cost_usd": "0.1"}),
    ev(artifact_paths=["/etc/passwd"]), ev(artifact_paths=["../up"]), ev(artifact_paths=["a/../../b"]),
    ev(artifact_paths=["a b"]), ev(artifact_paths=["x" * 301]), ev(artifact_paths=["ok"] * 65),
    ev(artifact_paths="data/x"), ev(artifact_paths=[3]), ev(extra_field=1), ev(drop=("run_id",)),
    ev(drop=("stage",)), ev(drop=("event_type",)), {}, "an event", 42, None, [ev()],
]


def model_verdicts(body: bytes, max_event_bytes: int | None = INGRESS_MAX_BYTES) -> list[Any]:
    """What the model's path makes of a batch: each event's record, or its refusal (reason, words)."""
    try:
        objs = unpack_batch(body, max_event_bytes)
    except DecodeError as exc:
        return [(exc.reason, exc.detail)]
    return [(item.reason, item.detail) if isinstance(item, DecodeError) else item.to_record()
            for item in validate_events(objs)]


def same(body: bytes, *, fast: bool | None = None, now_ts: bool = False) -> None:
    """Both paths agree on ``body``; ``fast`` says whether the fast path must have taken it."""
    expected = model_verdicts(body)
    got = decode_batch(body, BATCH_MAX_EVENTS, INGRESS_MAX_BYTES)
    if fast is not None:
        assert (got is not None) is fast, expected
    if got is None:
        return
    events, records = got
    if not now_ts:
        assert [e.to_record() for e in events] == expected
    else:  # a missing ts is "now" on both sides: compare all else
        for record in (*records, *expected):
            record.pop("ts")
    assert records == expected
    # the values' types too (an int cost stays an int, a float a float), and the key order of the log
    assert [[(k, type(v)) for k, v in r.items()] for r in records] == [
        [(k, type(v)) for k, v in r.items()] for r in expected
    ]


@pytest.mark.parametrize("fields", VALID)
def test_a_valid_event_takes_the_fast_path_and_gives_the_models_record(fields: dict[str, Any]) -> None:
    same(msgpack.packb([fields]), fast=True)


def test_a_missing_ts_is_now_on_both_paths() -> None:
    same(msgpack.packb([ev(drop=("ts",))]), fast=True, now_ts=True)


@pytest.mark.parametrize("fields", MALFORMED, ids=range(len(MALFORMED)))
def test_a_malformed_event_is_handed_to_the_model_alone_or_in_a_batch(fields: Any) -> None:
    same(msgpack.packb([fields]), fast=False)
    same(msgpack.packb([ev(), fields, ev(message="after")]), fast=False)


@pytest.mark.parametrize("body", [
    b"", b"\xc1", msgpack.packb([]), msgpack.packb({"a": 1}), msgpack.packb([ev()]) + b"\x00",
    msgpack.packb([ev()] * (BATCH_MAX_EVENTS + 1)), msgpack.packb([ev()], use_bin_type=False),
    # an extension type, and invalid UTF-8 inside a string
    msgpack.packb([ev(message=msgpack.ExtType(1, b"x"))]),
    msgpack.packb([ev(message="AB")]).replace(b"\xa2AB", b"\xa2\xff\xfe"),
])
def test_a_broken_batch_is_the_models_refusal(body: bytes) -> None:
    same(body)


def packed_map(pairs: list[tuple[str, Any]]) -> bytes:
    """A msgpack map of ``pairs`` as given, repeated keys and all (no dict can hold them)."""
    head = b"\xde" + len(pairs).to_bytes(2, "big")
    return head + b"".join(msgpack.packb(k) + msgpack.packb(v) for k, v in pairs)


def test_repeated_keys_mean_the_last_as_in_the_model() -> None:
    fields = list(ev(message="second").items())
    same(b"\x91" + packed_map([("message", "first"), *fields]), fast=True)
    counters = packed_map([("train_step", 1), ("train_step", 2)])
    element = packed_map([(k, v) for k, v in fields if k != "counters_delta"])
    same(b"\x91" + element, fast=True)
    with_counters = b"\xde" + (len(fields)).to_bytes(2, "big") + b"".join(
        msgpack.packb(k) + (counters if k == "counters_delta" else msgpack.packb(v)) for k, v in fields
    )
    same(b"\x91" + with_counters, fast=True)


def test_an_element_padded_past_the_limit_with_repeated_keys_is_refused_like_the_model_does() -> None:
    pad = "x" * 1000
    count = INGRESS_MAX_BYTES // 1000 + 2
    padded = packed_map([("message", pad)] * count + list(ev().items()))
    body = b"\x92" + padded + msgpack.packb(ev())
    assert model_verdicts(body)[0][0] == "oversize"
    same(body, fast=False)
    # a large batch of small events is still taken fast
    same(msgpack.packb([ev(message="y" * 400)] * 300), fast=True)


_PIECES = [*"ab:_-./= İKſßı\x1b[0m\né", "sk-", "token=", "Bearer ", "ghp_", "password:", "x" * 20]
_TEXT = st.lists(st.sampled_from(_PIECES), max_size=20).map("".join)
_FIELD_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "ts": st.sampled_from([TS, "2024-02-15T12:34:56Z", "x", TS + "\n", 0]),
    "run_id": st.sampled_from([RUN, "run_x", RUN.upper()]),
    "round": st.one_of(st.integers(-2, 100_002), st.booleans(), st.floats(allow_nan=False)),
    "stage": st.sampled_from(["generate", "train", "external", "round_end", "x"]),
    "level": st.sampled_from(["info", "warn", "error", "success", "fatal"]),
    "event_type": st.sampled_from(["progress", "error", "stage_start", "nope"]),
    "message": st.one_of(_TEXT, st.integers(-(2**63), 2**64 - 1)),
    "error": st.one_of(st.none(), _TEXT),
    "counters_delta": st.dictionaries(st.sampled_from([*COUNTER_NAMES, "bad"]),
                                      st.one_of(st.integers(-1, MAX_DELTA + 1), st.booleans()), max_size=4),
    "usage_delta": st.dictionaries(st.sampled_from([*USAGE_NAMES, "bad"]),
                                   st.one_of(st.none(), st.integers(-1, 2**32), st.floats(-1, 2e6)), max_size=4),
    "artifact_paths": st.lists(st.sampled_from(["data/x.jsonl", "../x", "/abs", "sk-proj-" + "d" * 30, "ok/é"]),
                               max_size=3),
}


@settings(max_examples=300, deadline=None)
@given(st.lists(st.fixed_dictionaries({}, optional=_FIELD_VALUES), min_size=1, max_size=4))
def test_random_events_get_the_same_verdicts(changes: list[dict[str, Any]]) -> None:
    same(msgpack.packb([ev(**change) for change in changes]))


AGENT_ONLY = [  # what an agent's own code may hand over, that no wire can carry
    ev(artifact_paths=("a.txt",)), ev(counters_delta={"train_step": 1.5}), ev(message=object()),
    ev(usage_delta={"estimated_cost_usd": 2**70}), ev(round=2**70), ev(message="ok", error=b"x"),
]


@pytest.mark.parametrize("fields", VALID + MALFORMED[:30] + AGENT_ONLY, ids=range(len(VALID) + 30 + len(AGENT_ONLY)))
def test_an_agents_event_record_is_the_models(fields: Any) -> None:
    fields = dict(fields)
    try:
        expected: Any = Event.model_validate(fields).to_record()
    except ValueError as exc:
        with pytest.raises(ValueError) as raised:
            event_record(fields)
        assert str(raised.value) == str(exc)
        return
    assert event_record(fields) == expected


def test_packing_gives_msgpacks_bytes() -> None:
    records = [Event.model_validate(f).to_record() for f in VALID]
    assert pack_records(records) == msgpack.packb(records, use_bin_type=True)
    assert pack_record(records[0]) == msgpack.packb(records[0], use_bin_type=True)


def test_the_default_ts_is_the_clocks_utc_millisecond(monkeypatch: pytest.MonkeyPatch) -> None:
    from heidi_engine.bus import event as event_module

    for now, text in ((1708000496.7899, "2024-02-15T12:34:56.789Z"), (1708000497.0004, "2024-02-15T12:34:57.000Z"),
                      (1708000496.9999, "2024-02-15T12:34:56.999Z"), (0.5, "1970-01-01T00:00:00.500Z")):
        monkeypatch.setattr(event_module.time, "time", lambda now=now: now)
        assert event_module.utc_now_iso() == text
