"""The supervisor's three sockets: ingress (PULL), egress (PUB) and control (ROUTER).

This is the only place the supervisor's sockets are touched. Every received message is verified and
validated here in the bus's decoding order (docs/architecture.md); refusals are counted by reason and logged at most
once per reason per minute, and never raise out of the receive calls.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import zmq
from pydantic import BaseModel

from heidi_engine.bus.clients import Client
from heidi_engine.bus.codec import (
    BATCH_MAX_EVENTS,
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
from heidi_engine.bus.event_wire import decode_batch
from heidi_engine.bus.freshness import Nonces
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
# Ingress is bounded in bytes, across all its senders: the server moves verified messages out of the
# socket into its own buffer of at most INGRESS_BUDGET_BYTES (whether or not its owner reads them now), and
# beyond that leaves them in the socket, where libzmq holds INGRESS_HWM messages per connection before each
# sender waits in its own queue (its PUSH blocks). Junk is refused as it is moved, and costs nothing after.
INGRESS_BUDGET_BYTES = 256 * 1024 * 1024
INGRESS_HWM = 16
_ENTRY_BYTES = 512  # what a buffered message costs beyond its body (its header, the tuple): charged too
_FILL_MAX = 1024  # messages moved per call, so that control input is looked at between them
_INGRESS_TRANSPORT_MAX = INGRESS_BATCH_MAX_BYTES + 64 * 1024
_RECV_BYTES_MAX = 16 * 1024 * 1024  # what one receive call hands its owner at most; the rest waits
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


def remote_sender(client: Client, sender: str) -> str:
    """How a remote client's message is known on this side: by the client's name, then what it said."""
    return f"{client.name}/{sender}"[:160]


def _receive(
    sock: zmq.Socket[bytes], remote: RemoteListener | None, bad: BadMessageLog, where: str
) -> tuple[list[bytes], Client | None] | None:
    """The next message on ``sock`` and the remote client it came from (``None``: a local one), without
    blocking; :class:`zmq.Again` when there is none. ``None`` for a message from a key revoked since its
    connection was opened: dropped and counted (``remote:revoked``)."""
    if remote is None:
        return sock.recv_multipart(zmq.NOBLOCK), None
    parts = sock.recv_multipart(zmq.NOBLOCK, copy=False)
    frames = [part.bytes for part in parts]
    try:
        user = parts[-1].get("User-Id")  # set by the ZAP handler on CURVE connections only
    except zmq.ZMQError:
        return frames, None
    client = remote.client(str(user))
    if client is None:
        bad.refuse("remote", DecodeError("revoked", f"a message on {where} from a revoked client key"))
        return None
    return frames, client


def ingress_batch(body: bytes, bad: BadMessageLog) -> tuple[list[Event], list[dict[str, Any]] | None]:
    """An ingress batch's valid events, with their records when all were (checked in one C call); what
    the fast path cannot take whole goes to the model, which refuses (into ``bad``) exactly what is wrong."""
    fast = decode_batch(body, BATCH_MAX_EVENTS, INGRESS_MAX_BYTES)
    if fast is not None:
        return fast
    try:
        objs = unpack_batch(body, INGRESS_MAX_BYTES)
    except DecodeError as exc:
        bad.refuse("ingress", exc)
        return [], None
    events: list[Event] = []
    for item in validate_events(objs):
        if isinstance(item, DecodeError):
            bad.refuse("ingress", item)
        else:
            events.append(item)
    return events, None


@dataclass(frozen=True)
class Caller:
    """Who sent a command, and where its reply goes."""

    identity: bytes  # the control socket's routing id
    # The remote client, known from its connection's CURVE handshake; None for a local client (ipc or the
    # plain --tcp-port, reached only with the home's own bus.json), which has every right.
    client: Client | None = None


@dataclass(frozen=True)
class Ready:
    """Which sockets have input after a :meth:`BusServer.wait`."""

    ingress: bool
    control: bool


class BusServer:
    """Binds the three endpoints of ``info`` and offers typed receive/publish/reply calls."""

    def __init__(
        self, info: BusInfo, *, egress_hwm: int = 100, ingress_hwm: int = INGRESS_HWM,
        ingress_budget: int = INGRESS_BUDGET_BYTES,
    ) -> None:
        self.info = info
        self.bad = BadMessageLog()
        # Which numbered messages arrived from each publisher: resends are dropped, gaps remembered.
        self.receipts = Receipts()
        self._nonces = Nonces()  # a command is taken once, and only while recent
        # False while the owner leaves ingress unread (a full disk): delivery queries say so.
        self.reading = True
        self._key = info.key  # what local clients sign with; a remote client signs with its own
        self._egress_key = info.egress_key
        # The transport drops (and disconnects) only messages far beyond the limit; those just over it
        # reach the codec, which refuses and counts them as oversize.
        self.ingress = new_socket(zmq.PULL, linger_ms=0, max_msg=_INGRESS_TRANSPORT_MAX)
        # What agents send faster than the loop takes it waits in the buffer, then in the socket up to the
        # mark, then in the agents' own queues: the supervisor's memory stays bounded under any flood.
        self.ingress.setsockopt(zmq.RCVHWM, ingress_hwm)
        self._buffer: deque[tuple[Header, bytes]] = deque()
        self._buffered_bytes = 0
        self._budget = ingress_budget
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
        """Block up to ``timeout_s`` for input on ingress or control, moving what arrives on ingress into
        the buffer while it has room. ``ingress=False``: the caller cannot take ingress messages now
        (they wait in the buffer, then in the socket), and only control input ends the wait."""
        if self.remote is not None:
            self.remote.refresh(self.bad.counts)
        if ingress and self._buffer:
            timeout_s = 0.0
        room = self._buffered_bytes < self._budget
        poller = self._poller if room else self._control_poller
        deadline = time.monotonic() + timeout_s
        while True:
            events = dict(poller.poll(max(0, int((deadline - time.monotonic()) * 1000))))
            if self.ingress in events:
                self._fill()
            if self.control in events or (ingress and self._buffer) or time.monotonic() >= deadline:
                return Ready(ingress and bool(self._buffer), self.control in events)
            if self._buffered_bytes >= self._budget:
                poller = self._control_poller

    @property
    def problem(self) -> str | None:
        """What keeps the bus from serving its clients well now (too many remote connections), else None."""
        return self.remote.problem if self.remote is not None else None

    def _fill(self) -> None:
        """Move verified ingress messages from the socket into the buffer, until it is full, the socket
        empty or :data:`_FILL_MAX` were moved; refused ones are counted."""
        for _ in range(_FILL_MAX):
            if self._buffered_bytes >= self._budget:
                return
            try:
                received = _receive(self.ingress, self.remote, self.bad, "ingress")
            except zmq.Again:
                return
            if received is None:
                continue
            frames, client = received
            try:
                if client is not None and not client.at_least("operator"):
                    raise DecodeError("not_allowed", f"client {client.name} (role {client.role}) may not publish")
                batch = bool(frames) and frames[0] == b"event"
                key = self._key if client is None else client.key
                _topic, header, body = verify(frames, key, INGRESS_BATCH_MAX_BYTES if batch else INGRESS_MAX_BYTES)
                if header.kind not in INGRESS_KINDS:
                    raise DecodeError("bad_kind", f"{header.kind} not accepted on ingress")
                if client is not None:
                    if header.kind == "state":  # an agent's heartbeat: only the supervisor's own agents are agents
                        raise DecodeError("not_allowed", f"client {client.name} may not speak for an agent")
                    # A remote sender is known by its client's name: it can never pass for a local agent.
                    header = replace(header, sender=remote_sender(client, header.sender))
            except DecodeError as exc:
                self.bad.refuse("ingress", exc)
                continue
            self._buffer.append((header, body))
            self._buffered_bytes += len(body) + _ENTRY_BYTES

    @property
    def buffered_bytes(self) -> int:
        """What the verified ingress messages the owner has not taken yet cost, in bytes (at most about the
        budget)."""
        return self._buffered_bytes

    def recv_ingress(self, limit: int = 1000) -> list[tuple[Header, bytes]]:
        """Up to ``limit`` verified ingress messages (and about 16 MiB) as (header, packed body), in the
        order they arrived, without blocking.

        Bodies stay packed: the broker validates each kind its own way (events are redacted). An event
        batch may be as large as :data:`INGRESS_BATCH_MAX_BYTES`; any other message, or one event in a
        batch, at most :data:`INGRESS_MAX_BYTES`. A publisher's resend of a message that already arrived
        is dropped here (:mod:`heidi_engine.bus.delivery`): a message counts as arrived when it is taken.
        """
        self._fill()
        out: list[tuple[Header, bytes]] = []
        taken = 0
        buffer = self._buffer
        while buffer and len(out) < limit and taken < _RECV_BYTES_MAX:
            header, body = buffer.popleft()
            self._buffered_bytes -= len(body) + _ENTRY_BYTES
            taken += len(body)
            if self.receipts.admit(header.sender, header.session, header.seq):
                out.append((header, body))
            if not buffer:
                self._fill()
        return out

    def decode_ingress_events(self, body: bytes) -> list[Event]:
        """The valid events of an ingress batch; each refused event (or the whole batch, when it is not
        one) is counted."""
        return self.decode_ingress_batch(body)[0]

    def decode_ingress_batch(self, body: bytes) -> tuple[list[Event], list[dict[str, Any]] | None]:
        """:meth:`decode_ingress_events`, with the events' records when every event was valid (the fast
        path, :mod:`heidi_engine.bus.event_wire`, checks a whole batch in C)."""
        return ingress_batch(body, self.bad)

    def decode_ingress_body(self, header: Header, body: bytes) -> Any | None:
        """Validate one ingress body; ``None`` (counted) when it is refused."""
        try:
            return decode_body(header.kind, body)
        except DecodeError as exc:
            self.bad.refuse("ingress", exc)
            return None

    def recv_command(self) -> tuple[Caller, Command] | None:
        """One verified command and who sent it, or ``None`` when nothing (valid) is waiting.

        Publishers' delivery queries are answered here, from :attr:`receipts`, and not returned. A command
        seen before, or too far from now (:mod:`heidi_engine.bus.freshness`), is refused and counted. What
        the caller may do is its owner's to decide (:attr:`Caller.client` carries the role).
        """
        for _ in range(_QUERIES_PER_CALL):
            try:
                received = _receive(self.control, self.remote, self.bad, "control")
            except zmq.Again:
                return None
            if received is None:
                continue
            frames, client = received
            if len(frames) < 2:
                self.bad.refuse("control", DecodeError("bad_frames", "no identity"))
                return None
            caller = Caller(frames[0], client)
            rest = frames[1:]
            try:
                message: Message = decode(rest, self._key if client is None else client.key)
                if not isinstance(message.body, Command):
                    raise DecodeError("bad_kind", f"{message.header.kind} is not a command")
            except DecodeError as exc:
                self.bad.refuse("control", exc)
                return None
            command = message.body
            header = message.header
            sender = header.sender if client is None else remote_sender(client, header.sender)
            why = self._nonces.check((sender, header.session, command.id), header.ts, time.time())
            if why is not None:  # the same frames again, or frames from too far away in time
                self.bad.refuse("control", DecodeError(why, f"command {command.name!r} from {sender!r}"))
                skew = f"; its clock is {header.ts - time.time():+.0f} s from the supervisor's" if why == "stale" else ""
                self.reply(caller, Reply(id=command.id, ok=False, error=f"command refused: {why}{skew}"))
                continue
            if command.name != DELIVERY_QUERY:
                return caller, command
            if client is not None and not client.at_least("operator"):
                why = f"{DELIVERY_QUERY} is not allowed for client {client.name} (role {client.role}): it publishes nothing"
                self.bad.refuse("control", DecodeError("not_allowed", why))
                self.reply(caller, Reply(id=command.id, ok=False, error=why))
                continue
            self.reply(caller, self._delivery_answer(sender, command, client))
        return None

    def _delivery_answer(self, asker: str, command: Command, client: Client | None) -> Reply:
        args = command.args
        sender, session, sent = args.get("sender"), args.get("session"), args.get("sent")
        if client is not None and isinstance(sender, str):
            sender = remote_sender(client, sender)  # as its messages were received
        valid = (isinstance(sender, str) and isinstance(session, str) and set(args) <= {"sender", "session", "sent"}
                 and (sent is None or (isinstance(sent, int) and not isinstance(sent, bool) and 0 <= sent <= MAX_SEQ)))
        if not valid:
            return Reply(id=command.id, ok=False,
                         error=f"{DELIVERY_QUERY} takes sender and session (strings) and sent (a count)")
        if sender != asker:
            return Reply(id=command.id, ok=False, error=f"{DELIVERY_QUERY}: a publisher asks about its own messages only")
        answer = self.receipts.answer(str(sender), str(session), sent)
        return Reply(id=command.id, ok=True, result={**answer, "server": self.info.session, "reading": self.reading})

    def reply(self, caller: Caller, reply: Reply) -> None:
        """Send ``reply`` to ``caller``, signed with its own key (dropped silently if it is gone)."""
        header = Header("reply", "supervisor", self.info.session, time.time(), self.info.session)
        key = self._key if caller.client is None else caller.client.key
        frames = encode_raw(key, b"reply", header, pack_body(reply))
        try:
            self.control.send_multipart([caller.identity, *frames], flags=zmq.NOBLOCK)
        except zmq.ZMQError:
            pass

    def publish(self, kind: str, body: BaseModel | bytes, seq: int | None) -> None:
        """Sign and publish on egress, stamped with the supervisor session and ``seq`` (an event batch's
        first; ``body`` is then the packed batch)."""
        header = Header(kind, "supervisor", self.info.session, time.time(), self.info.session, seq)
        packed = body if isinstance(body, bytes) else pack_body(body)
        try:
            self.egress.send_multipart(encode_raw(self._egress_key, kind.encode(), header, packed), flags=zmq.NOBLOCK)
        except zmq.Again:
            pass  # PUB never blocks; with no subscriber or at the high-water mark a message is dropped

    def close(self) -> None:
        """Close all three sockets (and stop admitting remote clients)."""
        if self.remote is not None:
            self.remote.close()
        for sock in (self.ingress, self.egress, self.control):
            sock.close()
