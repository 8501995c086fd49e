"""Acknowledged delivery: which numbered messages of each publisher arrived, so that an exiting agent
can ask, and resend what did not, without anything being counted twice.

Every message a :class:`~heidi_engine.bus.publisher.Publisher` sends carries a number in its header's
``seq`` (1, 2, 3 … per publisher session; ingress headers have no other use for it). The server keeps,
per (sender, session), the highest number that arrived and the numbers below it that did not (a gap:
only a connection that broke and came back loses messages in the middle). A message whose number
already arrived is a resend of something that was only late: it is dropped, not counted again.

At close a publisher asks the control socket :data:`DELIVERY_QUERY` with its sender, session and how
many messages it sent; the answer says through which number everything arrived and which numbers are
missing below it. The server answers this query itself (it is part of the bus's delivery, not a
supervisor command), and remembers the count, so that when the agent has gone the supervisor can say
how many of its messages never arrived (:meth:`Receipts.undelivered`).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

__all__ = ["DELIVERY_QUERY", "MAX_MISSING", "Answer", "Receipts", "parse_answer"]

DELIVERY_QUERY = "delivered"
# Publisher sessions remembered (the least recently heard forgotten first; a run makes two per agent
# start) and gap numbers remembered per session (a gap is a broken connection's loss, a few messages):
# at most a few MiB in all, whatever a peer sends.
MAX_SOURCES = 4096
MAX_MISSING = 64


@dataclass(frozen=True)
class Answer:
    """A :data:`DELIVERY_QUERY` answer: everything arrived ``through`` a number but the ``missing`` ones,
    and ``forgotten`` more gap numbers (beyond :data:`MAX_MISSING`) did not; ``server`` is the answering
    supervisor's session, and ``reading`` whether it reads its ingress now (not while its disk is full:
    what waits in its socket cannot be confirmed until it can write again)."""

    through: int
    missing: frozenset[int]
    forgotten: int
    server: str
    reading: bool = True


class _Source:
    __slots__ = ("forgotten", "missing", "sent", "through")

    def __init__(self) -> None:
        self.through = 0
        self.missing: set[int] = set()
        self.forgotten = 0  # gap numbers beyond what ``missing`` keeps (never filled, as far as we know)
        self.sent: int | None = None  # how many the publisher said it sent, once it asked


class Receipts:
    """The numbers that arrived, per (sender, session); bounded in sessions and in gaps."""

    def __init__(self, *, max_sources: int = MAX_SOURCES, max_missing: int = MAX_MISSING) -> None:
        self._sources: OrderedDict[tuple[str, str], _Source] = OrderedDict()
        self._max_sources = max_sources
        self._max_missing = max_missing
        self.duplicates = 0
        self.gaps = 0  # numbers found missing when a later one arrived (filled or not)

    def admit(self, sender: str, session: str, number: int | None) -> bool:
        """Whether the message is new (take it) or a copy of one that already arrived (drop it).

        Unnumbered messages (``None``: not from a :class:`Publisher`) are always new.
        """
        if number is None:
            return True
        source = self._source(sender, session)
        if number > source.through:
            if number > source.through + 1:
                self._note_gap(source, number)
            source.through = number
            return True
        if number in source.missing:
            source.missing.discard(number)
            return True
        self.duplicates += 1
        return False

    def _source(self, sender: str, session: str) -> _Source:
        """The session's receipts, made the most recent (the oldest are forgotten beyond the bound)."""
        key = (sender, session)
        source = self._sources.get(key)
        if source is None:
            source = self._sources[key] = _Source()
            if len(self._sources) > self._max_sources:
                self._sources.popitem(last=False)
        else:
            self._sources.move_to_end(key)
        return source

    def _note_gap(self, source: _Source, number: int) -> None:
        lost = number - source.through - 1
        self.gaps += lost
        # Only the most recent gap numbers are kept: those are the ones a closing publisher still holds.
        source.missing.update(range(max(source.through + 1, number - self._max_missing), number))
        if len(source.missing) > self._max_missing:
            kept = sorted(source.missing)[-self._max_missing:]
            source.forgotten += len(source.missing) - len(kept)
            source.missing = set(kept)
        source.forgotten += max(0, lost - self._max_missing)

    def answer(self, sender: str, session: str, sent: int | None = None) -> dict[str, Any]:
        """What :data:`DELIVERY_QUERY` replies (see :class:`Answer`, without ``server``: the bus server
        adds it). ``sent``: how many the publisher says it sent."""
        if sent is None and (sender, session) not in self._sources:
            return {"through": 0, "missing": [], "forgotten": 0}
        source = self._source(sender, session)
        if sent is not None:
            source.sent = sent
        return {"through": source.through, "missing": sorted(source.missing), "forgotten": source.forgotten}

    def undelivered(self, sender: str) -> int:
        """Messages of ``sender`` (all its sessions) known not to have arrived: the gaps, and what its
        publishers said they sent beyond what arrived."""
        lost = 0
        for (name, _session), source in self._sources.items():
            if name == sender:
                lost += len(source.missing) + source.forgotten + max(0, (source.sent or 0) - source.through)
        return lost


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def parse_answer(result: Any) -> Answer | None:
    """The :class:`Answer` in a :data:`DELIVERY_QUERY` reply's result; ``None`` when malformed."""
    if not isinstance(result, dict):
        return None
    through, forgotten = _count(result.get("through")), _count(result.get("forgotten"))
    missing, server, reading = result.get("missing"), result.get("server"), result.get("reading")
    if through is None or forgotten is None or not isinstance(server, str) or not isinstance(reading, bool):
        return None
    if not isinstance(missing, list) or len(missing) > MAX_MISSING:
        return None
    if not all((n := _count(m)) is not None and 0 < n < through for m in missing):
        return None
    return Answer(through, frozenset(missing), forgotten, server, reading)
