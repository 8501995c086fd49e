"""The supervisor's three sockets: ingress (PULL), egress (PUB) and control (ROUTER).

This is the only place the supervisor's sockets are touched. Every received message is verified and
validated here in the bus's decoding order (docs/architecture.md); refusals are counted by reason and logged at most
once per reason per minute, and never raise out of the receive calls.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import zmq
from pydantic import BaseModel

from heidi_engine.bus.codec import (
    MAX_MESSAGE_BYTES,
    MAX_SEQ,
    DecodeError,
    Header,
    Message,
    decode,
    decode_body,
    encode_raw,
    pack_body,
    unpack_batch,
    validate_events,
    verify,
)
from heidi_engine.bus.connection import BusInfo
from heidi_engine.bus.context import new_socket
from heidi_engine.bus.delivery import DELIVERY_QUERY, Receipts
from heidi_engine.bus.event import Event
from heidi_engine.bus.message import Command, Reply
from heidi_engine.bus.remote import RemoteListener

log = logging.getLogger(__name__)

INGRESS_KINDS = frozenset({"event", "sample", "state"})
# Agents send small messages (an event is under 2 KiB): a larger event, sample or heartbeat is refused.
INGRESS_MAX_BYTES = 64 * 1024
# A batch of events is one message; the publisher keeps its batches well under this.
INGRESS_BATCH_MAX_BYTES = MAX_MESSAGE_BYTES
_LOG_EVERY_S = 60.0
_TRANSPORT_MAX = 2 * MAX_MESSAGE_BYTES
_QUERIES_PER_CALL = 64  # delivery queries answered inside one recv_command call


class BadMessageLog:
    """Counts refused messages by reason and logs each reason at most once a minute."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.counts: Counter[str] = Counter()
        self._clock = clock
        self._last_logged: dict[str, float] = {}

    def refuse(self, where: str, error: DecodeError) -> None:
        """Count one refused message received on ``where``."""
        key = f"{where}:{error.reason}"
        self.counts[key] += 1
        now = self._clock()
        if now - self._last_logged.get(key, -_LOG_EVERY_S) >= _LOG_EVERY_S:
            self._last_logged[key] = now
            log.warning("refused message on %s: %s (%d so far)", where, error, self.counts[key])

    @property
    def total(self) -> int:
        """All refused messages."""
        return sum(self.counts.values())


@dataclass(frozen=True)
class Ready:
    """Which sockets have input after a :meth:`BusServer.wait`."""

    ingress: bool
    control: bool


class BusServer:
    """Binds the three endpoints of ``info`` and offers typed receive/publish/reply calls."""

    def __init__(self, info: BusInfo, *, egress_hwm: int = 100, ingress_hwm: int = 1_000) -> None:
        self.info = info
        self.bad = BadMessageLog()
        # Which numbered messages arrived from each publisher: resends are dropped, gaps remembered.
        self.receipts = Receipts()
        # False while the owner leaves ingress unread (a full disk): delivery queries say so.
        self.reading = True
        self._key = info.key
        # The transport drops (and disconnects) only messages far beyond the limit; those just over it
        # reach the codec, which refuses and counts them as oversize.
        self.ingress = new_socket(zmq.PULL, linger_ms=0, max_msg=2 * INGRESS_BATCH_MAX_BYTES)
        # What agents send faster than the loop takes it waits here up to the mark, then in the agents'
        # own queues (their PUSH blocks): the supervisor's memory stays bounded under any flood.
        self.ingress.setsockopt(zmq.RCVHWM, ingress_hwm)
        self.egress = new_socket(zmq.PUB, linger_ms=100)
        # A slow viewer loses messages at this mark instead of slowing the supervisor; it sees the gap.
        # Both marks count messages, and a message may be a batch of up to 256 events.
        self.egress.setsockopt(zmq.SNDHWM, egress_hwm)
        self.control = new_socket(zmq.ROUTER, linger_ms=100, max_msg=_TRANSPORT_MAX)
        self.control.setsockopt(zmq.ROUTER_MANDATORY, 0)
        self.remote: RemoteListener | None = None
        try:
            self.ingress.bind(info.ingress)
            self.egress.bind(info.egress)
            self.control.bind(info.control)
            if info.listen:
                # After the local binds: the CURVE options apply to the TCP endpoints only.
                self.remote = RemoteListener(info.home, info.listen, (self.ingress, self.egress, self.control))
        except Exception:
            self.close()
            raise
        self._poller = zmq.Poller()
        self._poller.register(self.ingress, zmq.POLLIN)
        self._poller.register(self.control, zmq.POLLIN)
        self._control_poller = zmq.Poller()
        self._control_poller.register(self.control, zmq.POLLIN)

    def wait(self, timeout_s: float, *, ingress: bool = True) -> Ready:
        """Block up to ``timeout_s`` for input on ingress or control (control only when not ``ingress``:
        the caller cannot take ingress messages now, and they wait in the socket meanwhile)."""
        if self.remote is not None:
            self.remote.refresh(self.bad.counts)
        poller = self._poller if ingress else self._control_poller
        events = dict(poller.poll(max(0, int(timeout_s * 1000))))
        return Ready(self.ingress in events, self.control in events)

    def recv_ingress(self, limit: int = 1000) -> list[tuple[Header, bytes]]:
        """Up to ``limit`` verified ingress messages as (header, packed body), without blocking.

        Bodies stay packed: the broker validates each kind its own way (events are redacted). An event
        batch may be as large as :data:`INGRESS_BATCH_MAX_BYTES`; any other message, or one event in a
        batch, at most :data:`INGRESS_MAX_BYTES`. A publisher's resend of a message that already arrived
        is dropped here (:mod:`heidi_engine.bus.delivery`).
        """
        out: list[tuple[Header, bytes]] = []
        for _ in range(limit):
            try:
                frames = self.ingress.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            try:
                batch = bool(frames) and frames[0] == b"event"
                _topic, header, body = verify(frames, self._key, INGRESS_BATCH_MAX_BYTES if batch else INGRESS_MAX_BYTES)
                if header.kind not in INGRESS_KINDS:
                    raise DecodeError("bad_kind", f"{header.kind} not accepted on ingress")
            except DecodeError as exc:
                self.bad.refuse("ingress", exc)
                continue
            if self.receipts.admit(header.sender, header.session, header.seq):
                out.append((header, body))
        return out

    def decode_ingress_events(self, body: bytes) -> list[Event]:
        """The valid events of an ingress batch, validated in one call when all are; each refused event
        (or the whole batch, when it is not one) is counted."""
        try:
            objs = unpack_batch(body, INGRESS_MAX_BYTES)
        except DecodeError as exc:
            self.bad.refuse("ingress", exc)
            return []
        events: list[Event] = []
        for item in validate_events(objs):
            if isinstance(item, DecodeError):
                self.bad.refuse("ingress", item)
            else:
                events.append(item)
        return events

    def decode_ingress_body(self, header: Header, body: bytes) -> Any | None:
        """Validate one ingress body; ``None`` (counted) when it is refused."""
        try:
            return decode_body(header.kind, body)
        except DecodeError as exc:
            self.bad.refuse("ingress", exc)
            return None

    def recv_command(self) -> tuple[bytes, Command] | None:
        """One verified command and the identity to reply to, or ``None`` when nothing (valid) is waiting.

        Publishers' delivery queries are answered here, from :attr:`receipts`, and not returned.
        """
        for _ in range(_QUERIES_PER_CALL):
            try:
                frames = self.control.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return None
            if len(frames) < 2:
                self.bad.refuse("control", DecodeError("bad_frames", "no identity"))
                return None
            identity, rest = frames[0], frames[1:]
            try:
                message: Message = decode(rest, self._key)
                if not isinstance(message.body, Command):
                    raise DecodeError("bad_kind", f"{message.header.kind} is not a command")
            except DecodeError as exc:
                self.bad.refuse("control", exc)
                return None
            command = message.body
            if command.name != DELIVERY_QUERY:
                return identity, command
            self.reply(identity, self._delivery_answer(message.header.sender, command))
        return None

    def _delivery_answer(self, asker: str, command: Command) -> Reply:
        args = command.args
        sender, session, sent = args.get("sender"), args.get("session"), args.get("sent")
        valid = (isinstance(sender, str) and isinstance(session, str) and set(args) <= {"sender", "session", "sent"}
                 and (sent is None or (isinstance(sent, int) and not isinstance(sent, bool) and 0 <= sent <= MAX_SEQ)))
        if not valid:
            return Reply(id=command.id, ok=False,
                         error=f"{DELIVERY_QUERY} takes sender and session (strings) and sent (a count)")
        if sender != asker:
            return Reply(id=command.id, ok=False, error=f"{DELIVERY_QUERY}: a publisher asks about its own messages only")
        answer = self.receipts.answer(str(sender), str(session), sent)
        return Reply(id=command.id, ok=True, result={**answer, "server": self.info.session, "reading": self.reading})

    def reply(self, identity: bytes, reply: Reply) -> None:
        """Send ``reply`` to the client ``identity`` (dropped silently if that client is gone)."""
        header = Header("reply", "supervisor", self.info.session, time.time(), self.info.session)
        frames = encode_raw(self._key, b"reply", header, pack_body(reply))
        try:
            self.control.send_multipart([identity, *frames], flags=zmq.NOBLOCK)
        except zmq.ZMQError:
            pass

    def publish(self, kind: str, body: BaseModel | bytes, seq: int | None) -> None:
        """Sign and publish on egress, stamped with the supervisor session and ``seq`` (an event batch's
        first; ``body`` is then the packed batch)."""
        header = Header(kind, "supervisor", self.info.session, time.time(), self.info.session, seq)
        packed = body if isinstance(body, bytes) else pack_body(body)
        try:
            self.egress.send_multipart(encode_raw(self._key, kind.encode(), header, packed), flags=zmq.NOBLOCK)
        except zmq.Again:
            pass  # PUB never blocks; with no subscriber or at the high-water mark a message is dropped

    def close(self) -> None:
        """Close all three sockets (and stop admitting remote clients)."""
        if self.remote is not None:
            self.remote.close()
        for sock in (self.ingress, self.egress, self.control):
            sock.close()
