"""The event's fast path: a batch decoded and checked in C (msgspec), then the few rules C cannot say.

:class:`~heidi_engine.bus.event.Event` (pydantic) stays the event's definition, and the one that explains
a refusal. This module declares the same fields and limits again for msgspec, and checks the rest with
the very functions the model's validators call. It only ever *accepts*: whatever it cannot accept
whole (a malformed element, a rule broken, text to cut before redaction, an element too large) makes
it answer ``None``, and the caller takes the pydantic path, which gives the same refusal, with the same
reason, as before. A test feeds both paths the same corpus of valid and invalid events and requires
identical records and verdicts (tests/unit/bus/test_event_wire.py).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal

import msgspec

from heidi_engine.bus.event import (
    COUNTER_NAMES,
    ERROR_MAX,
    MAX_DELTA,
    MESSAGE_MAX,
    RAW_TEXT_MAX,
    RUN_ID_RE,
    TS_PATTERN,
    Event,
    EventType,
    Level,
    Stage,
    check_usage_delta,
    checked_paths,
    trusted_event,
    utc_now_iso,
)
from heidi_engine.bus.redaction import clean

__all__ = ["decode_batch", "event_record", "pack_record", "pack_records"]

_COUNTERS = frozenset(COUNTER_NAMES)
# Matched whole here (msgspec's pattern searches, and its ``$`` passes a trailing newline).
_TS_RE = re.compile(TS_PATTERN)


class _Wire(msgspec.Struct, forbid_unknown_fields=True):
    """The v1.0 event's fields, types, defaults and numeric bounds, as :class:`Event` declares them."""

    run_id: str
    stage: Stage
    event_type: EventType
    event_version: Literal["1.0"] = "1.0"
    ts: str = msgspec.field(default_factory=utc_now_iso)
    round: Annotated[int, msgspec.Meta(ge=0, le=100_000)] = 0
    level: Level = "info"
    message: str = ""
    counters_delta: dict[str, int] = {}
    usage_delta: dict[str, float | int | None] = {}
    artifact_paths: list[str] = []
    error: str | None = None


_BATCH = msgspec.msgpack.Decoder(list[_Wire])
_ELEMENTS = msgspec.msgpack.Decoder(list[msgspec.Raw])
_ENCODER = msgspec.msgpack.Encoder()
_ONE = msgspec.msgpack.Decoder(_Wire)
_DICT: dict[str, Any] = {}
_LIST: list[str] = []


def _record(wire: _Wire) -> dict[str, Any] | None:
    """The record :meth:`Event.to_record` would give, or ``None`` when a rule is broken (or the text
    is too long to redact: the model refuses that)."""
    if _TS_RE.fullmatch(wire.ts) is None or RUN_ID_RE.fullmatch(wire.run_id) is None:
        return None
    error = wire.error
    if error is not None and (wire.level != "error" or len(error) > RAW_TEXT_MAX):
        return None
    message = wire.message
    if len(message) > RAW_TEXT_MAX:
        return None
    counters = wire.counters_delta
    for name, delta in counters.items():
        if name not in _COUNTERS or not 0 <= delta <= MAX_DELTA:
            return None
    usage = wire.usage_delta
    paths = wire.artifact_paths
    try:
        if usage:
            check_usage_delta(usage)
        if paths:
            paths = checked_paths(paths)
    except ValueError:
        return None
    record = {
        "event_version": wire.event_version, "ts": wire.ts, "run_id": wire.run_id, "round": wire.round,
        "stage": wire.stage, "level": wire.level, "event_type": wire.event_type,
        "message": clean(message, MESSAGE_MAX) if message else message,
        "counters_delta": counters, "usage_delta": usage, "artifact_paths": paths,
    }
    if error is not None:
        record["error"] = clean(error, ERROR_MAX)
    return record


def decode_batch(
    body: bytes, max_events: int, max_event_bytes: int | None = None
) -> tuple[list[Event], list[dict[str, Any]]] | None:
    """An event batch's events and their records when every one is valid, else ``None`` (take the
    pydantic path, which refuses exactly what is wrong and keeps the rest)."""
    try:
        # Each element measured as packed when the body may hold one too large (a hostile packer may
        # pad one with repeated keys, which decoding would not show).
        if max_event_bytes is not None and len(body) > max_event_bytes and any(
            len(element) > max_event_bytes for element in _ELEMENTS.decode(body)
        ):
            return None
        wires = _BATCH.decode(body)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None
    if not 0 < len(wires) <= max_events:
        return None
    records = []
    for wire in wires:
        record = _record(wire)
        if record is None:
            return None
        records.append(record)
    return [trusted_event(record) for record in records], records


def event_record(fields: Mapping[str, Any]) -> dict[str, Any]:
    """The record of an event built from ``fields`` (an agent's own event: validated and redacted);
    the pydantic model's ValueError when ``fields`` is not a valid event. A value msgpack carries as a
    plain one (an enum as its value, a datetime as ISO text) counts as what it becomes on the wire: the
    supervisor, which checks every event again, sees no more than that."""
    wire = None
    get = fields.get
    if type(get("counters_delta", _DICT)) is dict and type(get("usage_delta", _DICT)) is dict and (
        type(get("artifact_paths", _LIST)) is list
    ):
        # Packed and read back: a third of what converting the mapping costs, and as strict as the model
        # (only exact lists and dicts get here; a value msgpack cannot carry, or carries as another type,
        # is refused either way and left to the model to explain).
        with contextlib.suppress(msgspec.ValidationError, msgspec.DecodeError, TypeError, OverflowError):
            wire = _ONE.decode(_ENCODER.encode(fields))
    record = None if wire is None else _record(wire)
    if record is None:
        return Event.model_validate(dict(fields)).to_record()
    return record


def pack_record(record: dict[str, Any]) -> bytes:
    """One event record packed (an element of a batch): the bytes ``msgpack.packb`` gives."""
    return _ENCODER.encode(record)


def pack_records(records: Sequence[dict[str, Any]]) -> bytes:
    """A msgpack array of event records: the bytes ``msgpack.packb(records, use_bin_type=True)`` gives."""
    return _ENCODER.encode(records)
