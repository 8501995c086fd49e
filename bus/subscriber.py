"""The viewers' side of the bus: a live copy of the run state (the zguide Clone pattern).

Subscribe first, then ask for a snapshot tagged with ``seq = N``, then apply only updates with
``seq > N`` (an event batch numbers its events on from its header's ``seq``; those at or below ``N`` are
skipped, the rest applied in one reducer pass). A gap in ``seq`` (a slow viewer whose messages the PUB socket dropped), a heartbeat ahead of
us, or a new supervisor session makes the subscriber take a fresh snapshot. When nothing is heard it
re-reads the connection file, so a restarted supervisor (new key, new session) is picked up by itself.

:class:`FeedSubscriber` follows the UI feed instead (supervisor/ui_feed.py): a delta of the state at most
every 100 ms, whatever the event rate, with the same snapshot, gap and session rules, counted in deltas.
"""

from __future__ import annotations

import secrets
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import zmq

from heidi_engine.bus.codec import DecodeError, decode
from heidi_engine.bus.connection import BusInfo, ConnectionFileError, read_bus_info
from heidi_engine.bus.context import new_socket
from heidi_engine.bus.control import ControlClient
from heidi_engine.bus.errors import BusError
from heidi_engine.bus.event import Event
from heidi_engine.bus.message import ControlBroadcast, FeedDelta, Heartbeat
from heidi_engine.bus.remote import connect
from heidi_engine.bus.state import (
    GAUGE_TYPES,
    RECENT_EVENTS,
    RunState,
    StatusPatch,
    apply_events,
    apply_sample,
    apply_status,
)

STALE_AFTER_S = 3.0
_SNAPSHOT_TIMEOUT_S = 2.0
# Validates one field of a state as it assigns it (what a model with validate_assignment does on setattr).
_ASSIGN = RunState.__pydantic_validator__.validate_assignment


class Subscriber:
    """Keeps :attr:`state` equal to the supervisor's, whatever the viewer joined late or fell behind.

    Drive it from one thread with :meth:`poll`; read :attr:`state` (or a copy) between polls.
    ``on_event`` is called for every event applied live (not for those folded into a snapshot), and
    ``on_batch`` once for each batch of them, with their records and the first one's ``seq``.
    """

    TOPICS: ClassVar[tuple[bytes, ...]] = (b"event", b"sample", b"state")

    def __init__(
        self,
        home: str | Path,
        *,
        sender: str = "viewer",
        stale_after_s: float = STALE_AFTER_S,
        on_event: Callable[[Event, int], None] | None = None,
        on_batch: Callable[[list[dict[str, Any]], int], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        rcvhwm: int = 2_000,
    ) -> None:
        self.home = Path(home)
        self.rcvhwm = rcvhwm
        self.sender = f"{sender}-{secrets.token_hex(3)}"
        self.stale_after_s = stale_after_s
        self.on_event = on_event
        self.on_batch = on_batch
        self.clock = clock
        self.state = RunState()
        self.seq = -1
        self.supervisor: str | None = None
        self.snapshots = 0
        self.gaps = 0
        self.bad_messages: Counter[str] = Counter()
        self.last_heard: float | None = None
        self.last_error: str | None = None
        self._info: BusInfo | None = None
        self._sub: zmq.Socket[bytes] | None = None
        self._control: ControlClient | None = None
        self._need_snapshot = True
        self._next_attempt = 0.0

    # -- connection --------------------------------------------------------------------------------

    def _connect(self, info: BusInfo) -> None:
        self._disconnect()
        sub = new_socket(zmq.SUB, linger_ms=0, max_msg=8 * 1024 * 1024)
        sub.setsockopt(zmq.RCVHWM, self.rcvhwm)
        for topic in self.TOPICS:
            sub.setsockopt(zmq.SUBSCRIBE, topic)
        connect(sub, info, info.egress)
        self._sub = sub
        self._control = ControlClient(info, sender=self.sender, timeout_s=_SNAPSHOT_TIMEOUT_S)
        self._info = info
        self._need_snapshot = True

    def _disconnect(self) -> None:
        if self._sub is not None:
            self._sub.close(linger=0)
            self._sub = None
        if self._control is not None:
            self._control.close()
            self._control = None

    def _ensure_connected(self) -> bool:
        """Connect (or reconnect to a new supervisor session) when the connection file says so."""
        now = self.clock()
        if self._sub is not None and self._info is not None and not self._silent(now):
            return True
        if now < self._next_attempt:
            return self._sub is not None
        self._next_attempt = now + 0.5
        try:
            info = read_bus_info(self.home)
        except ConnectionFileError as exc:
            self.last_error = str(exc)
            return self._sub is not None
        if self._info is None or info.session != self._info.session or self._sub is None:
            self._connect(info)
        return True

    def _silent(self, now: float) -> bool:
        return self.last_heard is None or now - self.last_heard > self.stale_after_s

    # -- state -------------------------------------------------------------------------------------

    def _snapshot(self) -> bool:
        assert self._control is not None
        try:
            result = self._control.call("snapshot")
        except BusError as exc:
            self.last_error = f"snapshot failed: {exc}"
            return False
        self.state = RunState.model_validate(result["state"])
        self.seq = int(result["seq"])
        self.supervisor = str(result["session"])
        self.state.seq = self.seq
        self.snapshots += 1
        self.last_heard = self.clock()
        self.last_error = None
        self._need_snapshot = False
        self._took_snapshot(result)
        return True

    def _took_snapshot(self, result: dict[str, Any]) -> None:
        """What a subclass keeps of a snapshot's answer besides the state."""

    def _handle(self, frames: list[bytes]) -> None:
        assert self._info is not None
        try:
            message = decode(frames, self._info.egress_key)
        except DecodeError as exc:
            self.bad_messages[exc.reason] += 1
            return
        header = message.header
        self.last_heard = self.clock()
        if header.supervisor != self.supervisor or header.seq is None:
            self._need_snapshot = True
            return
        self._apply(header.seq, message.body)

    def _apply(self, seq: int, body: Any) -> None:
        """Apply one egress message of this session, numbered ``seq``."""
        if isinstance(body, Heartbeat):
            if body.seq > self.seq:
                self.gaps += 1
                self._need_snapshot = True
            return
        if isinstance(body, list):
            self._apply_batch(seq, body)
            return
        if seq <= self.seq:
            return
        if seq != self.seq + 1:
            self.gaps += 1
            self._need_snapshot = True
            return
        self.seq = seq
        self.state.seq = seq
        if isinstance(body, GAUGE_TYPES):
            apply_sample(self.state, body)
        elif isinstance(body, StatusPatch):
            if ("run_id" in body.model_fields_set and body.run_id != self.state.run_id) or body.reset:
                # A new (or resumed) run replaces the whole state, not just the patched fields.
                self._need_snapshot = True
                return
            apply_status(self.state, body)

    def _apply_batch(self, first: int, events: list[Event]) -> None:
        """Events numbered ``first`` on: those already in the state are skipped, a hole means a gap."""
        skip = self.seq + 1 - first
        if skip < 0:
            self.gaps += 1
            self._need_snapshot = True
            return
        fresh = events[skip:]
        if not fresh:
            return
        pairs = [(event, event.to_record()) for event in fresh]
        apply_events(self.state, pairs)
        start = self.seq + 1
        self.seq += len(fresh)
        self.state.seq = self.seq
        if self.on_batch is not None:
            self.on_batch([record for _event, record in pairs], start)
        if self.on_event is not None:
            for offset, event in enumerate(fresh):
                self.on_event(event, start + offset)

    def poll(self, timeout_s: float = 0.1, *, max_messages: int = 10_000) -> int:
        """Receive and apply what has arrived (waiting up to ``timeout_s``); returns how many were read."""
        if not self._ensure_connected():
            time.sleep(min(timeout_s, 0.1))
            return 0
        assert self._sub is not None
        count = 0
        if self._sub.poll(int(timeout_s * 1000), zmq.POLLIN):
            while count < max_messages:
                try:
                    frames = self._sub.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                count += 1
                self._handle(frames)
        if self._need_snapshot:
            # Messages read before the snapshot with seq <= N are skipped by _handle afterwards.
            self._snapshot()
        return count

    def call(self, name: str, args: dict[str, Any] | None = None) -> Any:
        """A command over this subscriber's control connection (from the thread that polls it); raises
        :class:`~heidi_engine.bus.errors.BusError` (``CommandRefused`` for a refusal) when it fails."""
        if self._control is None:
            raise BusError(f"{name}: not connected to a supervisor")
        return self._control.call(name, args)

    # -- status for viewers ------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """True while the supervisor has been heard from within ``stale_after_s``."""
        return not self._silent(self.clock()) and self.supervisor is not None

    def silence_s(self) -> float | None:
        """Seconds since the supervisor was last heard, or ``None`` if never."""
        return None if self.last_heard is None else self.clock() - self.last_heard

    def close(self) -> None:
        """Close the sockets (idempotent)."""
        self._disconnect()


class FeedSubscriber(Subscriber):
    """A subscriber to the UI feed (:class:`~heidi_engine.bus.message.FeedDelta`, at most ten a second)
    instead of every event: its cost does not grow with the event rate.

    It applies the deltas that follow its snapshot's ``feed`` number; one missing (or a new session)
    means a new snapshot. A delta's fields are validated one by one as they are assigned, its events
    appended to the state's recent ones. ``on_batch(records, first)`` gets the events a delta carried,
    ``first`` being the number of the first as ``event_count`` counts (the newest is ``event_count``);
    ``on_left_out(count, first)`` the events it did not carry, just before those. Heartbeats tell a
    client that missed the last delta of a burst: a delta at or past a heartbeat's ``seq`` leaves before
    the next heartbeat, so a client still behind a heartbeat's ``seq`` at the next one missed it.
    """

    TOPICS: ClassVar[tuple[bytes, ...]] = (b"feed", b"state")

    def __init__(
        self,
        home: str | Path,
        *,
        on_left_out: Callable[[int, int], None] | None = None,
        **kwargs: Any,
    ) -> None:
        if kwargs.get("on_event") is not None:
            raise ValueError("the feed carries event records, not events: use on_batch")
        super().__init__(home, **kwargs)
        self.on_left_out = on_left_out
        self.feed = -1  # the number of the last delta applied (or of the snapshot's)
        self.deltas = 0
        self.left_out = 0  # events the deltas applied did not carry, in all
        self._behind: int | None = None  # the last heartbeat's seq, when it was ahead of ours

    def _took_snapshot(self, result: dict[str, Any]) -> None:
        self.feed = int(result.get("feed", -1))
        self._behind = None

    def _apply(self, seq: int, body: Any) -> None:
        if isinstance(body, FeedDelta):
            self._apply_delta(body)
        elif isinstance(body, Heartbeat):
            behind, self._behind = self._behind, body.seq if body.seq > self.seq else None
            if behind is not None and self.seq < behind:
                self.gaps += 1
                self._need_snapshot = True
        # Status patches (also on "state") need nothing here: the next delta carries what they changed.

    def _apply_delta(self, delta: FeedDelta) -> None:
        if delta.feed <= self.feed:
            return  # already in the snapshot
        if delta.feed != self.feed + 1:
            self.gaps += 1
            self._need_snapshot = True
            return
        state, records = self.state, delta.events
        try:
            if not all(isinstance(record, dict) for record in records):
                raise ValueError("an event record that is not a map")
            for name, value in delta.fields.items():
                if name != "recent_events":
                    _ASSIGN(state, name, value)
        except ValueError as exc:  # pydantic's ValidationError is one
            self.bad_messages["bad_feed"] += 1
            self.last_error = f"a feed delta did not fit the state: {str(exc)[:200]}"
            self._need_snapshot = True
            return
        recent = state.recent_events
        recent.extend(records)
        if len(recent) > RECENT_EVENTS:
            del recent[: len(recent) - RECENT_EVENTS]
        self.feed, self.seq, state.seq = delta.feed, delta.seq, delta.seq
        self.deltas += 1
        self.left_out += delta.left_out
        first = state.event_count - len(records) + 1
        if delta.left_out and self.on_left_out is not None:
            self.on_left_out(delta.left_out, first)
        if records and self.on_batch is not None:
            self.on_batch(records, first)


class ControlListener:
    """An agent's ear: pause/resume/stop broadcasts and the heartbeat's flags (which repair a missed one)."""

    def __init__(self, info: BusInfo) -> None:
        self.info = info
        self.pause_requested = False
        self.stop_requested = False
        self.last_heard: float | None = None
        self._sock = new_socket(zmq.SUB, linger_ms=0, max_msg=64 * 1024)
        self._sock.setsockopt(zmq.SUBSCRIBE, b"control")
        self._sock.setsockopt(zmq.SUBSCRIBE, b"state")
        connect(self._sock, info, info.egress)

    def poll(self, timeout_s: float = 0.0) -> None:
        """Apply every broadcast and heartbeat received so far (waiting up to ``timeout_s``)."""
        if not self._sock.poll(int(timeout_s * 1000), zmq.POLLIN):
            return
        while True:
            try:
                frames = self._sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                message = decode(frames, self.info.egress_key)
            except DecodeError:
                continue
            body = message.body
            self.last_heard = time.monotonic()
            if isinstance(body, ControlBroadcast):
                if body.action == "pause":
                    self.pause_requested = True
                elif body.action == "resume":
                    self.pause_requested = False
                else:
                    self.stop_requested = True
            elif isinstance(body, Heartbeat):
                self.pause_requested = body.pause_requested
                self.stop_requested = self.stop_requested or body.stop_requested

    def close(self) -> None:
        """Close the socket."""
        self._sock.close(linger=0)
