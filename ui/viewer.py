"""A live, frozen view of the run for UIs: a background thread keeps a :class:`Subscriber` current and
swaps in a fresh deep copy of the state under a lock; panels draw only from :meth:`LiveView.latest`.

The thread owns the subscriber's sockets (no socket is shared between threads).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from itertools import repeat
from pathlib import Path
from typing import Any

from heidi_engine.bus.state import RunState
from heidi_engine.bus.subscriber import Subscriber

EVENT_LOG = 5000
_PUBLISH_EVERY_S = 0.1
_REFRESH_IDLE_S = 1.0


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

    def __init__(self, home: str | Path, *, sender: str = "viewer", stale_after_s: float = 3.0) -> None:
        self.home = Path(home)
        self._sender = sender
        self._stale_after_s = stale_after_s
        self._lock = threading.Lock()
        self._events: deque[dict[str, object]] = deque(maxlen=EVENT_LOG)
        self._arrivals: deque[float] = deque(maxlen=4096)
        self._view = View(RunState(), -1, False, None, "connecting…")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="live-view", daemon=True)
        self.changed = threading.Event()
        self._sub: Subscriber | None = None

    def start(self) -> LiveView:
        """Start the background subscriber."""
        self._thread.start()
        return self

    def _on_batch(self, records: list[dict[str, Any]], _first_seq: int) -> None:
        # The subscriber has just folded these events into its state, in one reducer pass.
        self._events.extend(records)
        self._arrivals.extend(repeat(time.monotonic(), len(records)))

    def _run(self) -> None:
        sub = Subscriber(self.home, sender=self._sender, stale_after_s=self._stale_after_s, on_batch=self._on_batch)
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
                    # A (re)snapshot: the live log restarts from the snapshot's recent events.
                    snapshots = sub.snapshots
                    self._events.clear()
                    self._events.extend(sub.state.recent_events)
                    changed = True
                # A new view when something arrived (at most every _PUBLISH_EVERY_S), and once a second
                # regardless so that "last heard N s ago" keeps counting; an idle viewer costs nothing.
                since = now - last_publish
                if (changed and since >= _PUBLISH_EVERY_S) or since >= _REFRESH_IDLE_S:
                    last_publish = now
                    connected = sub.connected
                    self._publish(sub, now)
        finally:
            sub.close()

    def _publish(self, sub: Subscriber, now: float) -> None:
        while self._arrivals and now - self._arrivals[0] > 5.0:
            self._arrivals.popleft()
        rate = len(self._arrivals) / 5.0
        view = View(
            state=_frozen_copy(sub.state),
            seq=sub.seq,
            connected=sub.connected,
            silence_s=sub.silence_s(),
            error=sub.last_error,
            events=tuple(self._events),
            rate_events_s=rate,
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
