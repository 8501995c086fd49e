"""A live, frozen view of the run for UIs: a background thread keeps a :class:`FeedSubscriber` current and
swaps in a fresh copy of the state under a lock; panels draw only from :meth:`LiveView.latest`.

The thread owns the subscriber's sockets (no socket is shared between threads). It follows the UI feed
(a delta of the state at most every 100 ms, whatever the event rate): the live log holds the events the
deltas carried, and a marker (:func:`is_marker`) where a delta left events out. With ``history`` (the
dashboard), what a marker stands for, and the events older than the log's first, are loaded a page at a
time when a viewer asks (:meth:`EventLog.want`), from the supervisor's ``events`` command.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from heidi_engine.bus.errors import BusError
from heidi_engine.bus.state import RunState
from heidi_engine.bus.subscriber import FeedSubscriber

EVENT_LOG = 5000
PAGE = 500  # events a load asks for at most (the command's cap)
_PUBLISH_EVERY_S = 0.1
_REFRESH_IDLE_S = 1.0
_RATE_WINDOW_S = 5.0
_ASKED_MAX = 4  # loads waiting at once

Record = dict[str, object]


def is_marker(record: Mapping[str, object]) -> bool:
    """True for a log entry that stands for events the log does not hold: ``left_out`` of them, numbered
    up to ``before - 1``; ``front`` for those older than the log's first, ``note`` when they cannot be
    loaded (and why)."""
    return "left_out" in record


def _marker(count: int, before: int, *, front: bool = False, note: str | None = None) -> Record:
    return {"left_out": count, "before": before, "front": front, "note": note}


def _stands_for(entry: Mapping[str, object]) -> int:
    """How many events a log entry stands for: one for an event, a marker's ``left_out``."""
    count = entry.get("left_out", 1)
    return count if isinstance(count, int) else 1


class EventLog(tuple[Record, ...]):
    """A view's event log, oldest first, markers included; :meth:`want` asks for what a marker stands for."""

    loader: Callable[[Record], None] | None = None

    def want(self, marker: Mapping[str, object]) -> None:
        """Load (in the viewer's thread, soon) the events ``marker`` stands for, if it can be."""
        if self.loader is not None and is_marker(marker) and marker.get("note") is None:
            self.loader(dict(marker))


@dataclass(frozen=True)
class View:
    """What a viewer draws: a state copy, the connection's health, and the events seen live."""

    state: RunState
    seq: int
    connected: bool
    silence_s: float | None
    error: str | None
    events: tuple[dict[str, object], ...] = field(default_factory=tuple)
    rate_events_s: float = 0.0
    loads: int = 0  # pages asked for so far (loaded, or why not): the log changed though no event arrived


def _frozen_copy(state: RunState) -> RunState:
    """A copy the subscriber's later updates cannot reach. Only containers are copied: the reducer
    replaces GPU lists, agent maps, config and event records wholesale and never mutates them in place."""
    trainer = state.trainer.model_copy(
        update={"loss_history": list(state.trainer.loss_history), "round_starts": dict(state.trainer.round_starts)}
    )
    return state.model_copy(update={
        "counters": dict(state.counters), "usage": dict(state.usage), "trainer": trainer,
        "gpus": list(state.gpus), "agents": dict(state.agents), "recent_events": list(state.recent_events),
        "config": dict(state.config),
    })


class LiveView:
    """Runs a subscriber in a daemon thread; :meth:`latest` is cheap and thread-safe."""

    def __init__(
        self, home: str | Path, *, sender: str = "viewer", stale_after_s: float = 3.0, history: bool = False
    ) -> None:
        self.home = Path(home)
        self._sender = sender
        self._stale_after_s = stale_after_s
        self._history = history
        self._lock = threading.Lock()
        self._events: deque[Record] = deque()
        self._newest = 0  # the number (as event_count counts) of the log's newest event
        self._span = 0  # the events the log stands for: its records and what its markers stand for
        self._front_done = False  # the log holds the run's first event: nothing is older
        self._front_note: str | None = None  # why no older event can be loaded (None: they can, if any)
        self._arrivals: deque[tuple[float, int]] = deque()
        self._wanted: deque[int] = deque()  # the ``before`` of each marker asked for, oldest first
        self._asked: set[int] = set()
        self._loads = 0
        self._view = View(RunState(), -1, False, None, "connecting…")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="live-view", daemon=True)
        self.changed = threading.Event()
        self._sub: FeedSubscriber | None = None

    def start(self) -> LiveView:
        """Start the background subscriber."""
        self._thread.start()
        return self

    # -- the log (the subscriber's thread) ---------------------------------------------------------

    def _on_batch(self, records: list[dict[str, Any]], first: int) -> None:
        # The subscriber has just applied a delta carrying these events, numbered from ``first``.
        self._events.extend(records)
        self._span += len(records)
        self._newest = first + len(records) - 1
        self._arrivals.append((time.monotonic(), len(records)))
        self._trim()

    def _on_left_out(self, count: int, first: int) -> None:
        # The delta did not carry ``count`` events, just before the one numbered ``first``.
        self._events.append(_marker(count, first))
        self._span += count
        self._arrivals.append((time.monotonic(), count))
        self._trim()

    def _trim(self) -> None:
        while len(self._events) > EVENT_LOG:
            self._span -= _stands_for(self._events.popleft())

    def _restart_log(self, state: RunState) -> None:
        # A (re)snapshot: the live log restarts from the snapshot's recent events.
        self._events.clear()
        self._events.extend(state.recent_events)
        self._span, self._newest = len(state.recent_events), state.event_count
        self._front_done, self._front_note = False, None

    def _want(self, marker: Record) -> None:
        """Called from any thread (a viewer drawing the log): queue a load of ``marker``'s events."""
        before = marker.get("before")
        if not isinstance(before, int):
            return
        with self._lock:
            if before not in self._asked and len(self._asked) < _ASKED_MAX:
                self._asked.add(before)
                self._wanted.append(before)

    def _load(self, sub: FeedSubscriber) -> bool:
        """Serve one queued load; whether the log changed."""
        with self._lock:
            if not self._wanted:
                return False
            before = self._wanted.popleft()
        try:
            return self._fill(sub, before)
        finally:
            with self._lock:
                self._asked.discard(before)

    def _fill(self, sub: FeedSubscriber, before: int) -> bool:
        index = next((i for i in range(len(self._events) - 1, -1, -1)
                      if is_marker(self._events[i]) and self._events[i]["before"] == before), None)
        oldest = self._newest - self._span + 1
        if index is None and (before != oldest or self._front_done or self._front_note is not None):
            return False  # a marker the log no longer has (a snapshot, or trimmed)
        count = oldest - 1 if index is None else _stands_for(self._events[index])
        room = EVENT_LOG - len(self._events) if index is None else PAGE
        limit = min(PAGE, count, room)
        if limit <= 0:
            return False
        self._loads += 1
        try:
            page = sub.call("events", {"run_id": sub.state.run_id, "before": before, "limit": limit})
            records, first, more = list(page["events"]), int(page["first"]), bool(page["more"])
        except (BusError, KeyError, TypeError, ValueError) as exc:
            note = f"cannot load them: {str(exc)[:200]}"
            if index is None:
                self._front_note = note
            else:
                self._events[index] = _marker(count, before, note=note)
            return True
        got = before - first
        if index is None:
            self._events.extendleft(reversed(records))
            self._span += got
            if not more:
                self._front_done = first <= 1
                self._front_note = None if first <= 1 else "no older event is left in the files"
            return True
        rest = [] if got >= count else [_marker(count - got, first, note=None if more else "no longer in the files")]
        entries = list(self._events)
        entries[index:index + 1] = rest + records
        self._events = deque(entries)
        self._trim()
        return True

    def _front(self) -> Record | None:
        """The marker for the events older than the log's first, when there are any."""
        oldest = self._newest - self._span + 1
        if oldest <= 1 or self._front_done:
            return None
        note = self._front_note
        if note is None and len(self._events) >= EVENT_LOG:
            note = f"the log keeps the newest {EVENT_LOG:,}; older ones are in the run's files"
        return _marker(oldest - 1, oldest, front=True, note=note)

    # -- the thread --------------------------------------------------------------------------------

    def _run(self) -> None:
        sub = FeedSubscriber(self.home, sender=self._sender, stale_after_s=self._stale_after_s,
                             on_batch=self._on_batch, on_left_out=self._on_left_out)
        self._sub = sub
        snapshots = -1
        last_publish = 0.0
        connected = False
        try:
            while not self._stop.is_set():
                read = sub.poll(0.1)
                if read:
                    # Batch a burst until the next publish is due: one wake-up per publish, not per message.
                    due = last_publish + _PUBLISH_EVERY_S - time.monotonic()
                    if due > 0 and not self._stop.wait(due):
                        read += sub.poll(0)
                now = time.monotonic()
                changed = bool(read) or sub.connected != connected
                if sub.snapshots != snapshots:
                    snapshots = sub.snapshots
                    self._restart_log(sub.state)
                    changed = True
                if self._history and self._load(sub):
                    changed, last_publish = True, 0.0  # what was asked for is shown at once
                # A new view when something arrived (at most every _PUBLISH_EVERY_S), and once a second
                # regardless so that "last heard N s ago" keeps counting; an idle viewer costs nothing.
                since = now - last_publish
                if (changed and since >= _PUBLISH_EVERY_S) or since >= _REFRESH_IDLE_S:
                    last_publish = now
                    connected = sub.connected
                    self._publish(sub, now)
        finally:
            sub.close()

    def _publish(self, sub: FeedSubscriber, now: float) -> None:
        arrivals = self._arrivals
        while arrivals and now - arrivals[0][0] > _RATE_WINDOW_S:
            arrivals.popleft()
        front = self._front() if self._history else None
        log = EventLog((front, *self._events) if front is not None else self._events)
        if self._history:
            log.loader = self._want
        view = View(
            state=_frozen_copy(sub.state),
            seq=sub.seq,
            connected=sub.connected,
            silence_s=sub.silence_s(),
            error=sub.last_error,
            events=log,
            rate_events_s=sum(count for _at, count in arrivals) / _RATE_WINDOW_S,
            loads=self._loads,
        )
        with self._lock:
            self._view = view
        self.changed.set()

    def latest(self) -> View:
        """The most recent frozen view."""
        with self._lock:
            return self._view

    def wait_for(self, predicate: object, timeout_s: float) -> View | None:
        """Wait until ``predicate(view)`` is true; the view, or ``None`` at the deadline."""
        deadline = time.monotonic() + timeout_s
        while True:
            view = self.latest()
            if callable(predicate) and predicate(view):
                return view
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            self.changed.wait(min(0.1, remaining))
            self.changed.clear()

    def close(self) -> None:
        """Stop the thread (its sockets close with it)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2)
