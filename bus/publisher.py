"""The agents' side of the bus: signed events, samples and heartbeats PUSHed to the ingress socket.

Events are coalesced into batches (one frame set, one signature). Only a dense stream waits: while
events come less than a quarter of :data:`WINDOW_S` apart (over 4,000 a second), a batch leaves when it
holds :data:`MAX_BATCH` events or when its oldest event has waited :data:`WINDOW_S`, whichever comes
first. A lone event, or a steady trickle such as 1,000 a second, leaves at once: waiting for a partner
that is a millisecond away would add that millisecond to every event and save next to nothing. Events
that queue while the flusher is sending leave together whatever the rate. A flusher thread owns the
socket (no socket is shared between threads); :meth:`Publisher.send` only packs and queues, in order,
and blocks while the queue is full, so a supervisor that does not keep up slows its agents down rather
than lose their events.

Delivery is acknowledged, not hoped for. Every message carries a number (its header's ``seq``); the
flusher keeps the last 16 MiB of what it sent. :meth:`Publisher.close` asks the supervisor's control
socket which numbers arrived until all have, within the close linger, and sends again what went missing
(:mod:`heidi_engine.bus.confirmation`); the supervisor drops a copy of a message it already has, so
nothing is counted twice. What is still not confirmed at the end is logged with its count and kept in
:attr:`Publisher.undelivered`.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections import deque

import zmq
from pydantic import BaseModel

from heidi_engine.bus.codec import Header, encode_raw, join_packed, pack_body
from heidi_engine.bus.confirmation import SentLog, confirm
from heidi_engine.bus.connection import BusInfo
from heidi_engine.bus.context import new_socket
from heidi_engine.bus.errors import BusError
from heidi_engine.bus.message import KINDS
from heidi_engine.bus.remote import connect

log = logging.getLogger(__name__)

# Pending events are flushed on close for this long: an agent's last events must not be lost, even
# while the supervisor is busy. A supervisor that is gone kills its agents anyway (PDEATHSIG).
# libzmq honours the linger only while its context is being terminated, and pyzmq does not terminate a
# context at interpreter exit: each publisher therefore has a context of its own, which its close ends,
# so that a process does not exit with events still queued in libzmq.
CLOSE_LINGER_MS = 60_000
MAX_BATCH = 256
WINDOW_S = 0.001
# A batch up to this size needs no per-event size check at the supervisor (the check costs a Python call
# per event); a larger one (a single large event) is still accepted, up to the batch limit.
BATCH_BYTES = 64 * 1024 - 16  # the array header fits too
_QUEUE_MAX = 4 * MAX_BATCH
_SEND_SLICE_MS = 100  # the flusher's blocking send, in slices, so that it notices a close


class Publisher:
    """PUSH to the supervisor's ingress. Sends block (backpressure) rather than drop an event.

    ``send_timeout_s``: how long :meth:`send` waits for room before :class:`BusError` (``None``: for
    ever). ``hwm``: messages (batches) the socket holds before the flusher waits. ``window_s`` and
    ``max_batch``: the coalescing described above. ``linger_s``: how long :meth:`close` keeps trying to
    keep asking the supervisor to confirm what it sent, and sending again what went missing.

    After :meth:`close`: :attr:`resent` messages were sent again, :attr:`undelivered` events were not
    confirmed (0 when all arrived), and :attr:`confirmed` says whether the supervisor confirmed
    everything (``None``: it could not — it does not answer delivery queries, or it is not reading its
    ingress now — and libzmq's linger was all there was).
    """

    def __init__(
        self,
        info: BusInfo,
        sender: str,
        *,
        send_timeout_s: float | None = 60.0,
        hwm: int = 100_000,
        window_s: float = WINDOW_S,
        max_batch: int = MAX_BATCH,
        linger_s: float = CLOSE_LINGER_MS / 1000,
    ) -> None:
        if not 1 <= max_batch <= MAX_BATCH or not 0 <= window_s <= 1:
            raise ValueError(f"max_batch must be 1..{MAX_BATCH} and window_s 0..1 s")
        self.info = info
        self.sender = sender
        self.session = secrets.token_hex(8)
        self.sent = 0
        self.batches = 0
        self.resent = 0
        self.undelivered = 0
        self.confirmed: bool | None = False
        self._send_timeout_s = send_timeout_s
        self._window_s = window_s
        self._max_batch = max_batch
        self._linger_s = linger_s
        self._context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self._sock = new_socket(zmq.PUSH, linger_ms=int(linger_s * 1000), ctx=self._context)
        try:
            self._sock.setsockopt(zmq.SNDHWM, hwm)
            self._sock.setsockopt(zmq.SNDTIMEO, _SEND_SLICE_MS)
            connect(self._sock, info, info.ingress)
        except BaseException:
            self._sock.close(linger=0)
            self._context.term()
            raise
        self._queue: deque[tuple[str, bytes]] = deque()
        self._busy = 0  # items taken by the flusher and not yet on the socket
        self._cond = threading.Condition()
        self._closing = False
        self._flush_now = False
        self._failed: str | None = None
        self._last_queued = float("-inf")
        self._gap = float("inf")  # between the last two messages queued
        self._head_at = 0.0  # when the oldest queued message was queued
        self._give_up_at = float("inf")  # set by close()
        self._sent = SentLog()  # what the flusher sent, numbered, kept for resending
        self._inflight = 0  # events taken from the queue by the flusher and not yet on the socket
        # From here on only the flusher thread touches the socket; it closes it when it ends.
        self._thread = threading.Thread(target=self._run, name=f"publisher-{sender}", daemon=True)
        self._thread.start()

    def send(self, kind: str, body: BaseModel) -> None:
        """Queue one message (signed and sent by the flusher, events in batches); :class:`BusError` if
        the supervisor does not take it in time, or the bus failed."""
        self.send_packed(kind, pack_body(body))

    def send_packed(self, kind: str, packed: bytes) -> None:
        """:meth:`send` for a body already packed (an event record packed by
        :func:`~heidi_engine.bus.event_wire.pack_records`' encoder)."""
        if kind not in KINDS:
            raise ValueError(f"unknown message kind {kind!r}")
        deadline = None if self._send_timeout_s is None else time.monotonic() + self._send_timeout_s
        with self._cond:
            while len(self._queue) >= _QUEUE_MAX and self._failed is None and not self._closing:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise BusError(f"cannot send {kind} to the supervisor: it has not taken "
                                   f"{len(self._queue)} queued messages in {self._send_timeout_s:g} s")
                self._cond.wait(remaining)
            self._check(kind)
            now = time.monotonic()
            self._gap, self._last_queued = now - self._last_queued, now
            if not self._queue:
                self._head_at = now
            self._queue.append((kind, packed))
            self.sent += 1
            self._cond.notify_all()

    def _check(self, kind: str) -> None:
        if self._failed is not None:
            raise BusError(f"cannot send {kind} to the supervisor: {self._failed}")
        if self._closing:
            raise BusError(f"cannot send {kind}: the publisher is closed")

    def flush(self, timeout_s: float | None = None) -> None:
        """Block until everything queued is on the socket; :class:`BusError` if it is not in time."""
        limit = (self._send_timeout_s or 60.0) if timeout_s is None else timeout_s
        deadline = time.monotonic() + limit
        with self._cond:
            self._flush_now = True
            self._cond.notify_all()
            while (self._queue or self._busy) and self._failed is None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise BusError(f"the supervisor has not taken {len(self._queue) + self._busy} messages in time")
                self._cond.wait(remaining)
            if self._failed is not None:
                raise BusError(f"cannot flush to the supervisor: {self._failed}")

    # -- the flusher thread ------------------------------------------------------------------------

    def _take(self) -> list[tuple[str, bytes]] | None:
        """The next items to send, once the batch is full or the window is over; ``None`` at the end."""
        with self._cond:
            while not self._queue and not self._closing:
                self._cond.wait()
            if not self._queue:
                return None
            deadline = self._head_at + self._window_s
            while (self._gap < self._window_s / 4 and len(self._queue) < self._max_batch and not self._closing
                   and not self._flush_now and (remaining := deadline - time.monotonic()) > 0):
                self._cond.wait(remaining)
            self._flush_now = False
            items = list(self._queue)
            self._queue.clear()
            self._busy = len(items)
            self._cond.notify_all()  # senders waiting for room
            return items

    def _run(self) -> None:
        linger: int | None = None  # an unexpected error: libzmq's linger still hands over what it can
        try:
            while (items := self._take()) is not None:
                self._inflight = sum(1 for kind, _ in items if kind == "event")
                for kind, body, events in self._frames_of(items):
                    self._send(kind, body, events)
                    self._inflight -= events
                with self._cond:
                    self._busy = 0
                    self._cond.notify_all()
            outcome = confirm(self.info, self.sender, self.session, self._sent, self._put, self._give_up_at)
            self.confirmed, self.undelivered, self.resent = outcome.confirmed, outcome.undelivered, outcome.resent
            linger = outcome.linger_ms
        except _GiveUp as exc:
            linger = 0
            with self._cond:
                self._failed = str(exc)
                queued = sum(1 for kind, _ in self._queue if kind == "event")
                self._queue.clear()
                self._busy = 0
                self._cond.notify_all()
            # A failure ends the close before anything was confirmed: every kept message counts.
            unconfirmed = sum(m.events for m in self._sent.outstanding(0))
            self.undelivered = queued + self._inflight + unconfirmed
            if self.undelivered:
                log.warning("%s: %d events may not have reached the supervisor: %s", self.sender, self.undelivered, exc)
        finally:
            # Ending the context waits (up to the linger) until libzmq has handed over what it holds;
            # once the supervisor confirmed everything (or after a failure) there is nothing to wait for.
            self._sock.close(linger=linger)
            self._context.term()

    def _frames_of(self, items: list[tuple[str, bytes]]) -> list[tuple[str, bytes, int]]:
        """Runs of events joined into batches (at most ``max_batch`` events and about ``BATCH_BYTES``);
        every other message alone, all in their order; each with its count of events."""
        out: list[tuple[str, bytes, int]] = []
        run: list[bytes] = []
        size = 0
        for kind, body in items:
            if kind == "event" and len(run) < self._max_batch and size + len(body) <= BATCH_BYTES:
                run.append(body)
                size += len(body)
                continue
            if run:
                out.append(("event", join_packed(run), len(run)))
                run, size = [], 0
            if kind == "event":
                run, size = [body], len(body)
            else:
                out.append((kind, body, 0))
        if run:
            out.append(("event", join_packed(run), len(run)))
        return out

    def _send(self, kind: str, body: bytes, events: int) -> None:
        header = Header(kind, self.sender, self.session, time.time(), seq=self._sent.last + 1)
        frames = encode_raw(self.info.key, kind.encode(), header, body)
        self._put(frames)
        self._sent.add(frames, events)
        if kind == "event":
            self.batches += 1

    def _put(self, frames: list[bytes]) -> None:
        while True:
            try:
                self._sock.send_multipart(frames)
                return
            except zmq.Again:
                # The supervisor is busy: keep trying (senders block meanwhile), up to the close linger
                # once closing; a supervisor that is gone kills its agents anyway.
                if self._closing and time.monotonic() > self._give_up_at:
                    raise _GiveUp("the supervisor did not take the last messages within the close linger") from None
            except zmq.ZMQError as exc:
                raise _GiveUp(str(exc)) from None

    def close(self) -> None:
        """Flush everything queued (bounded by the linger) and close."""
        with self._cond:
            if not self._closing:
                self._give_up_at = time.monotonic() + self._linger_s
            self._closing = True
            self._cond.notify_all()
        self._thread.join(timeout=self._linger_s + 5)

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _GiveUp(Exception):
    """The flusher cannot deliver: the bus is broken, or a close waited out its linger."""
