"""A closing publisher's confirmation: what it sent, kept for resending, and the loop that asks the
supervisor which of it arrived (the publisher's half of :mod:`heidi_engine.bus.delivery`).

:func:`confirm` asks :data:`~heidi_engine.bus.delivery.DELIVERY_QUERY` until everything is confirmed or
the deadline passes: it waits while the supervisor catches up, sends again at once what a gap shows
lost, and what saw no progress for :data:`STALL_S` (at most :data:`TAIL_RESENDS` times, so that copies
stay bounded; the supervisor drops a copy of what it has). It stops early when nobody answers (the
local supervisor's process is gone, or no answer for :data:`UNANSWERED_S`), when another supervisor
answers (one that restarted never saw these messages), and when the supervisor says it is not reading
now (a full disk): then libzmq's hand-over is all there is.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from itertools import takewhile
from typing import NamedTuple

from heidi_engine.bus.connection import BusInfo
from heidi_engine.bus.control import ControlClient
from heidi_engine.bus.delivery import DELIVERY_QUERY, Answer, parse_answer
from heidi_engine.bus.errors import BusError

__all__ = ["RETAIN_BYTES", "STALL_S", "TAIL_RESENDS", "UNANSWERED_S", "Confirmation", "Sent", "SentLog", "confirm"]

log = logging.getLogger(__name__)

# What a closing publisher can still send again: the messages a supervisor may not have read when the
# connection ends are at most its queue's worth; 16 MiB is ample for the tail that a disconnect can lose.
RETAIN_BYTES = 16 * 1024 * 1024
STALL_S = 1.0  # outstanding messages and no progress for this long: send them again
UNANSWERED_S = 10.0  # no answer to a delivery query for this long: the supervisor is gone or hung
TAIL_RESENDS = 3
_ASK_TIMEOUT_S = 1.0  # one delivery query (lazy pirate: a new socket after a timeout)
_ASK_EVERY_S = 0.02


class Sent(NamedTuple):
    """One message as it went out: its number, its signed frames and how many events it carried."""

    number: int
    frames: list[bytes]
    events: int


class SentLog:
    """The messages a publisher sent, newest last, the oldest dropped beyond ``max_bytes``."""

    def __init__(self, max_bytes: int = RETAIN_BYTES) -> None:
        self.last = 0  # the last number sent
        self._kept: deque[Sent] = deque()
        self._bytes = 0
        self._max_bytes = max_bytes

    def add(self, frames: list[bytes], events: int) -> int:
        """Keep the next message; its number."""
        self.last += 1
        self._kept.append(Sent(self.last, frames, events))
        self._bytes += sum(len(f) for f in frames)
        while self._bytes > self._max_bytes and len(self._kept) > 1:
            self._bytes -= sum(len(f) for f in self._kept.popleft().frames)
        return self.last

    def oldest(self) -> int:
        """The oldest number still kept (``last + 1`` when none is)."""
        return self._kept[0].number if self._kept else self.last + 1

    def outstanding(self, through: int, missing: frozenset[int] = frozenset()) -> list[Sent]:
        """The kept messages not confirmed: the gaps, then everything after ``through`` (found from the
        newest end)."""
        tail = list(takewhile(lambda m: m.number > through, reversed(self._kept)))
        gaps = [m for m in self._kept if m.number in missing] if missing else []
        return gaps + tail[::-1]

    def forgotten(self, through: int, missing: frozenset[int]) -> int:
        """Unconfirmed numbers no longer kept: gaps older than the oldest kept, and the numbers between
        ``through`` and it."""
        oldest = self.oldest()
        return sum(1 for n in missing if n < oldest) + max(0, min(self.last + 1, oldest) - through - 1)


@dataclass
class Confirmation:
    """How a close ended: ``confirmed`` (``None``: the supervisor could not confirm, and libzmq's
    ``linger_ms`` is left for the hand-over), the ``undelivered`` events, the messages ``resent``, and
    ``through`` which number everything was confirmed."""

    confirmed: bool | None
    undelivered: int = 0
    resent: int = 0
    through: int = 0
    linger_ms: int | None = 0


def confirm(info: BusInfo, sender: str, session: str, sent: SentLog, put: Callable[[list[bytes]], None],
            deadline: float) -> Confirmation:  # fmt: skip
    """Ask until everything ``sent`` is confirmed or ``deadline`` (monotonic) passes, resending with
    ``put`` (see the module docstring)."""
    if sent.last == 0:
        return Confirmation(True)
    result = Confirmation(False)
    client = ControlClient(info, sender=sender, timeout_s=_ASK_TIMEOUT_S)
    query = {"sender": sender, "session": session, "sent": sent.last}
    # Only the supervisor these messages went to can confirm them: one that restarted never saw them.
    server = None if info.remote else info.session
    answer: Answer | None = None
    heard = acted = time.monotonic()  # the last answer; the last progress or resend
    resent_gaps: set[int] = set()
    tail_resends = 0

    def resend(messages: list[Sent]) -> None:
        for message in messages:
            put(message.frames)
        result.resent += len(messages)

    try:
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                reply = client.request(DELIVERY_QUERY, query, timeout_s=min(_ASK_TIMEOUT_S, remaining))
            except BusError:
                if _gone(info) or time.monotonic() - heard > UNANSWERED_S:
                    break  # nobody will answer: do not make the process wait the linger out
                continue  # busy: ask again
            heard = time.monotonic()
            new = parse_answer(reply.result) if reply.ok else None
            if new is None or not new.reading:
                if new is not None:
                    log.warning("%s: the supervisor is not reading now (no space left?); %d messages handed over "
                                "unconfirmed", sender, sent.last - new.through)  # fmt: skip
                # It cannot confirm: libzmq's hand-over is all there is, as before; what waits in the
                # supervisor's socket is read once it reads again, and it counts what never came.
                result.confirmed, result.linger_ms = None, max(0, int((deadline - heard) * 1000))
                return result
            server = server or new.server
            if new.server != server:
                log.warning("%s: the supervisor restarted; it cannot confirm what went to the one before", sender)
                break
            if answer is None or new.through > answer.through:
                acted = heard
            answer = new
            result.through = new.through
            outstanding = sent.outstanding(new.through, new.missing)
            if new.through >= sent.last and not outstanding:
                break  # everything arrived (gaps older than what is kept are counted below)
            gaps = [m for m in outstanding if m.number in new.missing and m.number not in resent_gaps]
            if gaps:  # a gap never fills by itself: those were lost
                resend(gaps)
                resent_gaps.update(m.number for m in gaps)
            if heard - acted >= STALL_S and tail_resends < TAIL_RESENDS:
                # No progress: perhaps the connection dropped them, perhaps they only wait to be read.
                resend([m for m in outstanding if m.number > new.through])
                tail_resends += 1
                acted = heard
            time.sleep(_ASK_EVERY_S)
    finally:
        client.close()
    through = answer.through if answer is not None else 0
    missing = answer.missing if answer is not None else frozenset[int]()
    unconfirmed = sent.outstanding(through, missing)
    forgotten = (answer.forgotten if answer is not None else 0) + sent.forgotten(through, missing)
    result.undelivered = sum(m.events for m in unconfirmed)
    result.confirmed = not unconfirmed and not forgotten
    if not result.confirmed:
        log.warning("%s: %d events in %d messages were not confirmed by the supervisor in time; they may be lost",
                    sender, result.undelivered, len(unconfirmed) + forgotten)  # fmt: skip
    return result


def _gone(info: BusInfo) -> bool:
    """Whether the local supervisor's process has ended (unknown for a remote one: False)."""
    if info.remote or info.pid <= 0:
        return False
    try:
        os.kill(info.pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False  # someone else's process: it exists
    return False
