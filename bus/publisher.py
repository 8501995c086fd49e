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
flusher keeps the last :data:`RETAIN_BYTES` of what it sent. :meth:`Publisher.close` asks the
supervisor's control socket which numbers arrived (:mod:`heidi_engine.bus.delivery`) until all have,
within the close linger: what the supervisor holds but has not read yet is waited for, and what went
missing (a gap, or no progress for :data:`STALL_S` while messages are outstanding) is sent again; the
supervisor drops a copy of a message it already has, so nothing is counted twice. What is still not
confirmed at the end is logged with its count and kept in :attr:`Publisher.undelivered`.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
import time
from collections import deque
from itertools import takewhile
from typing import NamedTuple

import zmq
from pydantic import BaseModel

from heidi_engine.bus.codec import Header, encode_raw, join_packed, pack_body
from heidi_engine.bus.connection import BusInfo
from heidi_engine.bus.context import new_socket
from heidi_engine.bus.control import ControlClient
from heidi_engine.bus.delivery import DELIVERY_QUERY, Answer, parse_answer
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
# What a closing publisher can still send again: the messages a supervisor may not have read when the
# connection ends are at most its queue's worth (1,000 batches of ~64 KiB would be far more than
# anything ever outstanding at close; 16 MiB is ample for the tail that a disconnect can lose).
RETAIN_BYTES = 16 * 1024 * 1024
STALL_S = 1.0  # outstanding messages and no progress for this long: send them again
UNANSWERED_S = 10.0  # no answer to a delivery query for this long: the supervisor is gone or hung
_TAIL_RESENDS = 3
_ASK_TIMEOUT_S = 1.0  # one delivery query (lazy pirate: a new socket after a timeout)
_ASK_EVERY_S = 0.02


class _Sent(NamedTuple):
    number: int
    frames: list[bytes]
    events: int  # events in the message (0 for a sample or status)


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
        self._number = 0  # the last message number sent (the flusher's)
        self._through = 0  # every number up to this one confirmed arrived
        self._inflight = 0  # events taken from the queue by the flusher and not yet on the socket
        self._retained: deque[_Sent] = deque()  # what the flusher sent, newest last, for resending
        self._retained_bytes = 0
        # From here on only the flusher thread touches the socket; it closes it when it ends.
        self._thread = threading.Thread(target=self._run, name=f"publisher-{sender}", daemon=True)
        self._thread.start()

    def send(self, kind: str, body: BaseModel) -> None:
        """Queue one message (signed and sent by the flusher, events in batches); :class:`BusError` if
        the supervisor does not take it in time, or the bus failed."""
        if kind not in KINDS:
            raise ValueError(f"unknown message kind {kind!r}")
        packed = pack_body(body)
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
            linger = self._settle()
        except _GiveUp as exc:
            linger = 0
            with self._cond:
                self._failed = str(exc)
                queued = sum(1 for kind, _ in self._queue if kind == "event")
                self._queue.clear()
                self._busy = 0
                self._cond.notify_all()
            unconfirmed = sum(m.events for m in self._retained if m.number > self._through)
            self.undelivered = queued + self._inflight + unconfirmed
            if self.undelivered:
                log.warning("%s: %d events may not have reached the supervisor: %s", self.sender, self.undelivered, exc)
        finally:
            # Ending the context waits (up to the linger) until libzmq has handed over what it holds;
            # once the supervisor confirmed everything (or after a failure) there is nothing to wait for.
            self._sock.close(linger=linger)
            self._context.term()

    def _settle(self) -> int | None:
        """Ask the supervisor which messages arrived until all have, sending again what went missing;
        the socket's close linger (ms) to use afterwards (``None``: libzmq's own, the full linger)."""
        if self._number == 0:
            self.confirmed = True
            return 0
        client = ControlClient(self.info, sender=self.sender, timeout_s=_ASK_TIMEOUT_S)
        query = {"sender": self.sender, "session": self.session, "sent": self._number}
        # Only the supervisor these messages went to can confirm them: one that restarted never saw them.
        server = None if self.info.remote else self.info.session
        answer: Answer | None = None
        heard = acted = time.monotonic()  # the last answer; the last progress or resend
        resent_gaps: set[int] = set()
        tail_resends = 0
        try:
            while (remaining := self._give_up_at - time.monotonic()) > 0:
                try:
                    reply = client.request(DELIVERY_QUERY, query, timeout_s=min(_ASK_TIMEOUT_S, remaining))
                except BusError:
                    if self._supervisor_gone() or time.monotonic() - heard > UNANSWERED_S:
                        break  # nobody will answer: do not make the process wait the linger out
                    continue  # busy: ask again
                heard = time.monotonic()
                new = parse_answer(reply.result) if reply.ok else None
                if new is None:
                    # A supervisor that cannot confirm: libzmq's linger is all there is, as before.
                    self.confirmed = None
                    return max(0, int((self._give_up_at - heard) * 1000))
                server = server or new.server
                if new.server != server:
                    log.warning("%s: the supervisor restarted; it cannot confirm what went to the one before", self.sender)
                    break
                if not new.reading:
                    # Its disk is full: it reads again once it can write, and what waits in its socket
                    # is read then. libzmq hands the rest over; the supervisor counts what never came.
                    log.warning("%s: the supervisor is not reading now (no space left?); %d messages handed "
                                "over unconfirmed", self.sender, self._number - new.through)  # fmt: skip
                    self.confirmed = None
                    return max(0, int((self._give_up_at - heard) * 1000))
                if answer is None or new.through > answer.through:
                    acted = heard
                answer = new
                self._through = new.through
                outstanding = self._outstanding(new.through, new.missing)
                if new.through >= self._number and not outstanding:
                    break  # everything arrived (gaps older than what is kept are counted below)
                gaps = [m for m in outstanding if m.number in new.missing and m.number not in resent_gaps]
                if gaps:  # a gap never fills by itself: those were lost
                    self._resend(gaps)
                    resent_gaps.update(m.number for m in gaps)
                if heard - acted >= STALL_S and tail_resends < _TAIL_RESENDS:
                    # No progress: perhaps the connection dropped them; perhaps they are only waiting to be
                    # read (then the copies are dropped). A few times at most, so copies stay bounded.
                    self._resend([m for m in outstanding if m.number > new.through])
                    tail_resends += 1
                    acted = heard
                time.sleep(_ASK_EVERY_S)
        finally:
            client.close()
        through = answer.through if answer is not None else 0
        missing = answer.missing if answer is not None else frozenset[int]()
        unconfirmed = self._outstanding(through, missing)
        forgotten = (answer.forgotten if answer is not None else 0) + sum(1 for n in missing if n < self._oldest_retained())
        forgotten += max(0, min(self._number + 1, self._oldest_retained()) - through - 1)
        self.undelivered = sum(m.events for m in unconfirmed)
        self.confirmed = not unconfirmed and not forgotten
        if not self.confirmed:
            log.warning("%s: %d events in %d messages were not confirmed by the supervisor within the close "
                        "linger of %g s; they may be lost", self.sender, self.undelivered,
                        len(unconfirmed) + forgotten, self._linger_s)  # fmt: skip
        return 0

    def _resend(self, messages: list[_Sent]) -> None:
        for message in messages:
            self._put(message.frames)
        self.resent += len(messages)

    def _supervisor_gone(self) -> bool:
        """Whether the local supervisor's process has ended (unknown for a remote one: False)."""
        if self.info.remote or self.info.pid <= 0:
            return False
        try:
            os.kill(self.info.pid, 0)
        except ProcessLookupError:
            return True
        except OSError:
            return False  # someone else's process: it exists
        return False

    def _oldest_retained(self) -> int:
        return self._retained[0].number if self._retained else self._number + 1

    def _outstanding(self, through: int, missing: frozenset[int]) -> list[_Sent]:
        """The kept messages not confirmed: the gaps, then everything after ``through`` (the newest
        messages, so they are found from the end)."""
        tail = list(takewhile(lambda m: m.number > through, reversed(self._retained)))
        gaps = [m for m in self._retained if m.number in missing] if missing else []
        return gaps + tail[::-1]

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
        self._number += 1
        header = Header(kind, self.sender, self.session, time.time(), seq=self._number)
        frames = encode_raw(self.info.key, kind.encode(), header, body)
        self._put(frames)
        self._retained.append(_Sent(self._number, frames, events))
        self._retained_bytes += sum(len(f) for f in frames)
        while self._retained_bytes > RETAIN_BYTES and len(self._retained) > 1:
            self._retained_bytes -= sum(len(f) for f in self._retained.popleft().frames)
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
