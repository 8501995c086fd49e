"""The wire codec: pure functions between typed messages and signed multipart frames.

Frames are ``[topic, header, body, signature]``. Header and body are msgpack; the signature is
HMAC-SHA256 over the length-prefixed topic, header and body. :func:`decode` checks, in this order,
frame count → size → signature → msgpack (with limits) → schema, and raises :class:`DecodeError` with a
short ``reason`` for any failure, never anything else, whatever the bytes.

Wire version 2 carries events in batches: the body of an ``event`` message is a msgpack array of one or
more events (at most :data:`BATCH_MAX_EVENTS`) under one header and one signature. On egress the header's
``seq`` is the first event's; the others follow it one by one (``first_seq .. first_seq + n - 1``). Every
other kind carries one body per message, as before. A peer speaking another wire version is refused
with a reason that names both versions.
"""

from __future__ import annotations

import hmac
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgpack
from pydantic import BaseModel, ValidationError

from heidi_engine.bus.event import Event, trusted_event
from heidi_engine.bus.message import BODY_ADAPTERS, EVENTS_ADAPTER, KINDS

PROTOCOL_VERSION = 2
MAX_MESSAGE_BYTES = 4 * 1024 * 1024
BATCH_MAX_EVENTS = 1024
FRAME_COUNT = 4
MAX_SEQ = 2**63 - 1  # a header's seq: a supervisor's event count or a publisher's message number
_LEN = struct.Struct(">III")
_HEADER_KEYS = frozenset({"v", "kind", "sender", "session", "ts", "sup", "seq"})
_EVENT_FIELDS = frozenset(Event.model_fields)
_EVENT_REQUIRED = frozenset(_EVENT_FIELDS - {"error"})


class DecodeError(Exception):
    """A received message was refused; ``reason`` is a short stable label used for counting."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Header:
    """Who sent a message, when, and (on egress) the supervisor session and sequence number."""

    kind: str
    sender: str
    session: str
    ts: float
    supervisor: str | None = None
    seq: int | None = None
    version: int = PROTOCOL_VERSION


@dataclass(frozen=True)
class Message:
    """A decoded, verified and validated message; the body of an ``event`` message is a list of events."""

    topic: bytes
    header: Header
    body: Any


def sign(key: bytes, topic: bytes, header: bytes, body: bytes) -> bytes:
    """HMAC-SHA256 over the three frames, length-prefixed so that frame boundaries are signed too."""
    # One C call over the joined frames: several times cheaper than hmac.new + update for small messages.
    return hmac.digest(key, b"".join((_LEN.pack(len(topic), len(header), len(body)), topic, header, body)), "sha256")


def _body_obj(body: BaseModel | dict[str, Any]) -> Any:
    if isinstance(body, BaseModel):
        # A sparse body (a patch) carries only the fields that were set, so that "not set" survives.
        if getattr(body, "wire_sparse", False):
            sparse = body.model_dump(mode="json", exclude_unset=True)
            sparse["type"] = body.model_dump(include={"type"})["type"]  # the discriminator always travels
            return sparse
        return body.model_dump(mode="json")
    return body


def pack_header(header: Header) -> bytes:
    """The msgpack header frame."""
    packed: bytes = msgpack.packb(
        {
            "v": header.version,
            "kind": header.kind,
            "sender": header.sender,
            "session": header.session,
            "ts": header.ts,
            "sup": header.supervisor,
            "seq": header.seq,
        },
        use_bin_type=True,
    )
    return packed


def encode_raw(key: bytes, topic: bytes, header: Header, body_bytes: bytes) -> list[bytes]:
    """Frames for an already-packed body (the supervisor re-stamps headers without re-packing bodies)."""
    head = pack_header(header)
    return [topic, head, body_bytes, sign(key, topic, head, body_bytes)]


def pack_body(body: BaseModel | dict[str, Any]) -> bytes:
    """The msgpack body frame of a single-body kind, or one element of an event batch."""
    packed: bytes = msgpack.packb(_body_obj(body), use_bin_type=True)
    return packed


def pack_events(events: Sequence[BaseModel | dict[str, Any]]) -> bytes:
    """The body frame of an event batch: a msgpack array of the events (records or models)."""
    packed: bytes = msgpack.packb([_body_obj(e) for e in events], use_bin_type=True)
    return packed


def join_packed(parts: Sequence[bytes]) -> bytes:
    """A msgpack array from elements packed one by one (:func:`pack_body`), without packing them again."""
    n = len(parts)
    head = bytes((0x90 | n,)) if n < 16 else b"\xdc" + n.to_bytes(2, "big") if n < 65536 else b"\xdd" + n.to_bytes(4, "big")
    return head + b"".join(parts)


def encode(
    key: bytes,
    kind: str,
    body: BaseModel | dict[str, Any] | Sequence[BaseModel | dict[str, Any]],
    *,
    sender: str,
    session: str,
    topic: bytes | None = None,
    supervisor: str | None = None,
    seq: int | None = None,
    ts: float | None = None,
) -> list[bytes]:
    """Signed frames for one message. ``topic`` defaults to the kind's name. An ``event`` body may be one
    event or a sequence of them; either way it travels as a batch."""
    if kind not in KINDS:
        raise ValueError(f"unknown message kind {kind!r}")
    header = Header(kind, sender, session, time.time() if ts is None else ts, supervisor, seq)
    if kind == "event":
        packed = pack_events(body if isinstance(body, Sequence) else [body])
    else:
        if isinstance(body, Sequence):
            raise ValueError(f"a {kind} message carries one body, not a sequence")
        packed = pack_body(body)
    return encode_raw(key, topic if topic is not None else kind.encode(), header, packed)


def _unpack(data: bytes, what: str) -> Any:
    try:
        return msgpack.unpackb(
            data, raw=False, strict_map_key=True, use_list=True, max_ext_len=0
        )
    except Exception as exc:  # msgpack raises several unrelated types on bad input
        raise DecodeError("bad_msgpack", f"{what}: {type(exc).__name__}") from None


def _parse_header(obj: Any) -> Header:
    # The version is read first: a peer of another version may lay its header out differently.
    if isinstance(obj, dict) and "v" in obj and obj["v"] != PROTOCOL_VERSION:
        raise DecodeError("bad_version", f"peer speaks wire version {str(obj['v'])[:20]}, this side speaks "
                          f"version {PROTOCOL_VERSION}: upgrade both to the same AutoTrain supervisor release")
    if not isinstance(obj, dict) or set(obj) != _HEADER_KEYS:
        raise DecodeError("bad_header", "header must be a map with keys " + ", ".join(sorted(_HEADER_KEYS)))
    version, kind, sender, session, ts = obj["v"], obj["kind"], obj["sender"], obj["session"], obj["ts"]
    sup, seq = obj["sup"], obj["seq"]
    if kind not in KINDS:
        raise DecodeError("bad_header", f"unknown kind {kind!r}")
    ok = (
        isinstance(sender, str) and 0 < len(sender) <= 128
        and isinstance(session, str) and 0 < len(session) <= 64
        and isinstance(ts, (int, float)) and not isinstance(ts, bool)
        and (sup is None or (isinstance(sup, str) and len(sup) <= 64))
        and (seq is None or (isinstance(seq, int) and not isinstance(seq, bool) and 0 <= seq <= MAX_SEQ))
    )
    if not ok:
        raise DecodeError("bad_header", "header field of the wrong type")
    return Header(kind, sender, session, float(ts), sup, seq, version)


def verify(frames: Sequence[bytes], key: bytes, max_size: int = MAX_MESSAGE_BYTES) -> tuple[bytes, Header, bytes]:
    """The first half of :func:`decode`: count, size, signature and header, but the body left packed."""
    if len(frames) != FRAME_COUNT:
        raise DecodeError("bad_frames", f"{len(frames)} frames, expected {FRAME_COUNT}")
    topic, head, body, signature = (bytes(f) for f in frames)
    if len(topic) + len(head) + len(body) + len(signature) > max_size:
        raise DecodeError("oversize", f"message larger than {max_size} bytes")
    if not hmac.compare_digest(signature, sign(key, topic, head, body)):
        raise DecodeError("bad_signature")
    header = _parse_header(_unpack(head, "header"))
    if not topic.startswith(header.kind.encode()):
        raise DecodeError("bad_header", "topic does not match kind")
    return topic, header, body


def _schema_error(exc: ValidationError, what: str) -> DecodeError:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first.get("loc", ())) or what
    return DecodeError("bad_schema", f"{what}.{where}: {first.get('msg', 'invalid')}"[:200])


def unpack_batch(body: bytes, max_event_bytes: int | None = None) -> list[Any]:
    """The elements of an event batch, unvalidated; :class:`DecodeError` when it is not a batch.

    With ``max_event_bytes``, a batch holding a larger element is refused as a whole (``oversize``): its
    packing says where each element starts, so this costs nothing unless the batch itself is that large.
    """
    if max_event_bytes is not None and len(body) > max_event_bytes:
        return _unpack_sized(body, max_event_bytes)
    obj = _unpack(body, "body")
    if not isinstance(obj, list) or not obj:
        raise DecodeError("bad_batch", "an event body must be a non-empty array of events")
    if len(obj) > BATCH_MAX_EVENTS:
        raise DecodeError("oversize", f"{len(obj)} events in one batch; at most {BATCH_MAX_EVENTS}")
    return obj


def _unpack_sized(body: bytes, max_event_bytes: int) -> list[Any]:
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=True, use_list=True, max_ext_len=0,
                                max_buffer_size=len(body))
    unpacker.feed(body)
    try:
        count = unpacker.read_array_header()
        if not 0 < count <= BATCH_MAX_EVENTS:
            raise DecodeError("bad_batch" if count == 0 else "oversize",
                              f"{count} events in one batch; 1 to {BATCH_MAX_EVENTS} are accepted")
        out = []
        for index in range(count):
            start = unpacker.tell()
            out.append(unpacker.unpack())
            if unpacker.tell() - start > max_event_bytes:
                raise DecodeError("oversize", f"event {index} of the batch is larger than {max_event_bytes} bytes")
        if unpacker.tell() != len(body):
            raise DecodeError("bad_msgpack", "body: extra data after the batch")
    except DecodeError:
        raise
    except Exception as exc:  # msgpack raises several unrelated types on bad input
        raise DecodeError("bad_msgpack", f"body: {type(exc).__name__}") from None
    return out


def validate_events(objs: list[Any], *, redacted: bool = False) -> list[Event | DecodeError]:
    """Validate a batch's events: one call for the whole batch when all are valid (the common case),
    else each on its own, so that one bad event is refused and the others go on."""
    context = {"redacted": True} if redacted else None
    try:
        events: list[Event] = EVENTS_ADAPTER.validate_python(objs, context=context)
        return list(events)
    except ValidationError:
        pass
    out: list[Event | DecodeError] = []
    adapter = BODY_ADAPTERS["event"]
    for obj in objs:
        try:
            out.append(adapter.validate_python(obj, context=context))
        except ValidationError as exc:
            out.append(_schema_error(exc, "event"))
    return out


def decode_body(kind: str, body: bytes, *, redacted: bool = False) -> Any:
    """Unpack and validate a body of the given kind (a list of events for ``event``).

    ``redacted`` tells the event model its text was already redacted by the supervisor (egress only).
    """
    if kind == "event":
        return _decode_events(body, redacted)
    obj = _unpack(body, "body")
    try:
        return BODY_ADAPTERS[kind].validate_python(obj, context={"redacted": True} if redacted else None)
    except ValidationError as exc:
        raise _schema_error(exc, kind) from None


def _decode_events(body: bytes, redacted: bool) -> list[Event]:
    objs = unpack_batch(body)
    if redacted and all(isinstance(o, dict) and _EVENT_FIELDS.issuperset(o) and o.keys() >= _EVENT_REQUIRED
                        for o in objs):
        # The supervisor validated (and redacted) every event it signs on egress; a viewer following a
        # busy run would otherwise spend most of its CPU validating them a second time.
        return [trusted_event(o) for o in objs]
    events = []
    for item in validate_events(objs, redacted=redacted):
        if isinstance(item, DecodeError):
            raise item
        events.append(item)
    return events


def decode(frames: Sequence[bytes], key: bytes, max_size: int = MAX_MESSAGE_BYTES) -> Message:
    """Verify and decode one received multipart message; :class:`DecodeError` on any problem.

    Messages the supervisor signed on egress (header ``sup`` set and matching the sender) carry text it
    already redacted; their events skip a second redaction pass here.
    """
    topic, header, body = verify(frames, key, max_size)
    from_supervisor = header.supervisor is not None and header.sender == "supervisor"
    return Message(topic, header, decode_body(header.kind, body, redacted=from_supervisor))
