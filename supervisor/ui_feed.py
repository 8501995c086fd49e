"""The UI feed: what viewers follow instead of every event, at a cost that does not grow with the event rate.

At most every :data:`FEED_INTERVAL_S`, and only when the state's ``seq`` moved (or the state was replaced),
the supervisor publishes one :class:`~heidi_engine.bus.message.FeedDelta` on the topic ``feed``: the
top-level fields of the run state that differ from the previous delta's (``recent_events`` aside), the
newest :data:`~heidi_engine.bus.message.FEED_EVENTS` of the events accepted since, how many it left out,
the ``seq`` it brings a client to, and the feed's counter (+1 a delta within a supervisor session).

A client takes a snapshot (whose ``feed`` names the last delta it includes) and applies the deltas that
follow it; one missing, or a new session, means a new snapshot. A delta that cannot be applied on top of
the one before — the state was replaced (a run started or resumed) — skips a number, so that every client
takes a snapshot. A snapshot first flushes what changed since the last delta (:meth:`UiFeed.flush`): the
state it carries is exactly what the deltas have described so far, and the next delta follows it.

Events the feed left out stay on disk: :func:`read_page` serves them a page at a time (the ``events``
command), numbered as the state's ``event_count`` counts them, the newest being ``event_count``.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from heidi_engine.bus.codec import pack_body
from heidi_engine.bus.journal import blocks_reversed, event_files
from heidi_engine.bus.message import FEED_EVENTS
from heidi_engine.bus.server import BusServer
from heidi_engine.bus.state import RunState

__all__ = ["FEED_INTERVAL_S", "FEED_MAX_BYTES", "PAGE_DEPTH_MAX", "PAGE_MAX", "UiFeed", "read_page"]

FEED_INTERVAL_S = 0.1
FEED_MAX_BYTES = 1024 * 1024  # a delta stays far below what a viewer accepts, whatever its events carry
PAGE_MAX = 500  # events in one page of the ``events`` command
PAGE_DEPTH_MAX = 20_000  # how far back from the newest event a page may reach: about 5 ms of reading at most
_EXCLUDED = {"recent_events"}  # the events travel as such; the client keeps its own recent ones
_MISSING = object()
_BLOCK = 1 << 16  # bytes read at a time, backwards


class UiFeed:
    """Collects what the loop accepts and publishes it as deltas; the supervisor's loop is its only caller."""

    def __init__(self, server: BusServer) -> None:
        self.server = server
        self.counter = 0  # the last delta's number (0: none yet)
        self._events: deque[dict[str, Any]] = deque(maxlen=FEED_EVENTS)
        self._accepted = 0  # events accepted since the last delta
        self._state: RunState | None = None  # the state object the last delta described
        self._seq = -1
        self._dump: dict[str, Any] = {}
        self._last = float("-inf")

    def accept(self, written: Sequence[tuple[object, dict[str, Any]]]) -> None:
        """Events (with their records) now on disk and in the state, in order: the newest are kept."""
        self._events.extend(record for _event, record in written[-FEED_EVENTS:])
        self._accepted += len(written)

    def tick(self, now: float, state: RunState, seq: int) -> bool:
        """Publish a delta if one is due (:data:`FEED_INTERVAL_S` since the last) and anything changed."""
        if now - self._last < FEED_INTERVAL_S:
            return False
        return self.flush(now, state, seq)

    def flush(self, now: float, state: RunState, seq: int) -> bool:
        """Publish what changed since the last delta now, if anything did (a snapshot calls this first)."""
        replaced = state is not self._state
        if not replaced and seq == self._seq:
            return False
        dump = state.model_dump(mode="json", exclude=_EXCLUDED)
        last = self._dump
        fields = {name: value for name, value in dump.items() if last.get(name, _MISSING) != value}
        # A replaced state (a new or resumed run) is not a change on top of the last delta: skip a number.
        self.counter += 2 if replaced and self._state is not None else 1
        events = list(self._events)
        body = {"feed": self.counter, "seq": seq, "fields": fields, "events": events,
                "left_out": self._accepted - len(events)}
        packed = pack_body(body)
        while len(packed) > FEED_MAX_BYTES and body["events"]:
            # Only events with long artifact lists get here: the newest that fit, the rest left out.
            events = events[len(events) // 2 + 1:]
            body.update(events=events, left_out=self._accepted - len(events))
            packed = pack_body(body)
        self.server.publish("feed", packed, seq)
        self._dump, self._state, self._seq, self._last = dump, state, seq, now
        self._events.clear()
        self._accepted = 0
        return True


def read_page(run_dir: Path, newest: int, before: int, limit: int) -> dict[str, Any]:
    """The run's events numbered ``before - limit`` … ``before - 1`` (at most those that exist), oldest
    first, read backwards from the end of its event log, whose last line is number ``newest``.

    ``first`` is the number of the first event returned (a line that is not JSON is counted but not
    returned); ``more`` whether older events remain in the files. ValueError when the page would start
    more than :data:`PAGE_DEPTH_MAX` events back, or past the newest event.
    """
    skip = newest + 1 - before  # the lines after the page
    if skip < 0:
        raise ValueError(f"there is no event {before - 1} yet: the newest is {newest}")
    if skip + limit > PAGE_DEPTH_MAX:
        raise ValueError(f"a page starts at most {PAGE_DEPTH_MAX:,} events back from the newest "
                         f"({newest:,}); older ones are in the run's files")
    want = max(0, min(limit, before - 1))
    taken: list[bytes] = []  # newest first, and one more than wanted when there is one: then more remain
    for path in reversed(event_files(run_dir) if want else []):
        for block in blocks_reversed(path, _BLOCK):
            count = block.count(b"\n")
            if skip >= count:  # after the page: counted, not split
                skip -= count
                continue
            lines = block.split(b"\n")[:-1]
            end, skip = count - skip, 0
            taken.extend(reversed(lines[max(0, end - (want + 1 - len(taken))):end]))
            if len(taken) > want:
                break
        if len(taken) > want:
            break
    more = len(taken) > want
    del taken[want:]
    taken.reverse()
    records = []
    for line in taken:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            # The supervisor's own write-ahead log: every line was validated and redacted before it was written.
            records.append(record)
    first = before - len(taken)
    return {"first": first, "events": records, "more": more and first > 1}
