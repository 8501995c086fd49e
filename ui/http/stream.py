"""The page's live stream: one thread turns the server's :class:`LiveView` into Server-Sent Events.

The view follows the supervisor's UI feed (a delta of the state at most every 100 ms, whatever the event
rate), so the page's cost to the supervisor is nothing more than the server's own: however many tabs are
open, the supervisor sends one feed to one server. :class:`PageFeed` checks the view every 100 ms and, when
it changed, encodes one ``delta`` frame (the page fields that changed, the new events, the points it adds
to each time series) into a short ring shared by every tab. A tab that reconnects with ``Last-Event-ID``
gets the frames after it while the ring still holds them, else a ``snapshot``. A new run (or a state that
went back) puts a ``snapshot`` frame in the ring, so every tab starts over in order.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from heidi_engine.bus.state import RunState
from heidi_engine.ui.http.page_data import Projector, link, page_events
from heidi_engine.ui.status_view import Health
from heidi_engine.ui.viewer import View, is_marker

__all__ = ["FEED_EVENTS", "PageFeed", "Series"]

FEED_EVENTS = 200  # events a frame carries at most (the UI feed's own bound)
RING = 64  # frames kept for tabs that reconnect (six seconds at the fastest rate)
SERIES_POINTS = 600
PING_S = 2.0
_TICK_S = 0.1


class Series:
    """A time series over the whole run at bounded memory: past :data:`SERIES_POINTS` points every other one
    is dropped and only every ``stride``-th new one is kept (as the state's loss history is thinned)."""

    def __init__(self, limit: int = SERIES_POINTS) -> None:
        self.limit = limit
        self.points: list[list[Any]] = []
        self.stride = 1
        self._offered = 0

    def offer(self, point: list[Any]) -> bool:
        """Keep ``point`` if the stride says so; whether it was kept."""
        self._offered += 1
        if (self._offered - 1) % self.stride:
            return False
        self.points.append(point)
        if len(self.points) > self.limit:
            del self.points[1::2]
            self.stride *= 2
        return True


def _trainer_point(state: RunState) -> list[Any]:
    trainer = state.trainer
    at = trainer.round_starts.get(trainer.round, 0) + trainer.step
    return [at, trainer.loss, trainer.learning_rate, trainer.tokens_per_s, trainer.memory_mb]


def _usage_point(state: RunState) -> list[Any]:
    usage = state.usage
    return [usage.get("input_tokens"), usage.get("output_tokens"), usage.get("estimated_cost_usd")]


def _system_point(state: RunState) -> list[Any]:
    host, gpus = state.host, state.gpu_summary()
    return [
        None if host is None else host.cpu_pct, None if host is None else host.ram_used_mb,
        None if host is None else host.ram_total_mb, gpus["vram_used_mb"], gpus["vram_total_mb"], gpus["util_pct"],
    ]  # fmt: skip


# Each series: what it is read from (a new point when that changed) and how its point is built.
_SERIES: dict[str, tuple[Callable[[RunState], Any], Callable[[RunState], list[Any]]]] = {
    "trainer": (lambda s: (s.trainer.round, s.trainer.step, s.trainer.loss), _trainer_point),
    "usage": (lambda s: s.usage, _usage_point),
    "system": (lambda s: (s.host, s.gpus), _system_point),
}


def frame(kind: str, body: dict[str, Any], frame_id: str | None = None) -> bytes:
    """One Server-Sent Events frame (JSON on one ``data:`` line: JSON never holds a raw newline)."""
    head = f"id: {frame_id}\n" if frame_id is not None else ""
    return f"{head}event: {kind}\n".encode() + b"data: " + orjson.dumps(body) + b"\n\n"


class PageFeed:
    """The stream's one producer (a daemon thread) and what each tab's connection reads from it."""

    def __init__(self, view: Any, health: Callable[[], Health], *, config_file: Path | None = None) -> None:
        self.view = view  # a LiveView (anything with ``latest() -> View``)
        self.health = health
        self.epoch = secrets.token_hex(4)  # a restarted server's ids never resume an old stream
        self._projector = Projector(config_file)
        self._series = {name: Series() for name in _SERIES}
        self._series_from: dict[str, Any] = {}
        self._events: deque[tuple[int, dict[str, Any]]] = deque(maxlen=FEED_EVENTS)
        self._ring: deque[tuple[int, bytes]] = deque(maxlen=RING)
        self._cond = threading.Condition()
        self._n = 0
        self._sent = 0  # the number of the newest event sent
        self._run_id: str | None = None
        self._last: View | None = None
        self._link: dict[str, Any] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="page-feed", daemon=True)

    def start(self) -> PageFeed:
        """Take the first view and start the thread."""
        self.step()
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop the thread and wake every tab's connection (they end)."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout=2)

    @property
    def closed(self) -> bool:
        return self._stop.is_set()

    def stream_id(self, n: int | None = None) -> str:
        return f"{self.epoch}-{self._n if n is None else n}"

    # -- the producer ------------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.wait(_TICK_S):
            self.step()

    def step(self) -> bool:
        """Encode a frame when the view changed since the last step; whether one was."""
        view = self.view.latest()
        if view is self._last:
            return False
        self._last = view
        state, now = view.state, round(time.time(), 3)
        with self._cond:
            self._link = link(view, self.health())
            if self._n and (state.run_id != self._run_id or state.event_count < self._sent):
                self._restart(view, now)
            else:
                self._delta(view, now)
            self._cond.notify_all()
        return True

    def _delta(self, view: View, now: float) -> None:
        state = view.state
        fields = self._projector.changed(state)
        events, first, left_out = self._new_events(view)
        series = self._new_points(state, now)
        self._n += 1
        body = {"fields": fields, "events": events, "first": first, "left_out": left_out, "link": self._link,
                "series": series}  # fmt: skip
        self._ring.append((self._n, frame("delta", body, self.stream_id())))

    def _restart(self, view: View, now: float) -> None:
        # A new run (or a state that went back): every tab takes a snapshot, in order with the deltas.
        self._projector = Projector(self._projector.config_file)
        self._series = {name: Series() for name in _SERIES}
        self._series_from.clear()
        self._events.clear()
        self._sent = 0
        self._delta(view, now)  # folds the new state in; its frame is replaced by the snapshot
        self._ring[-1] = (self._n, frame("snapshot", self._snapshot(), self.stream_id()))

    def _new_events(self, view: View) -> tuple[list[dict[str, Any]], int, int]:
        count = view.state.event_count
        self._run_id = view.state.run_id
        new = max(0, count - self._sent)
        taken: list[dict[str, Any]] = []
        for record in reversed(view.events):
            if len(taken) >= min(new, FEED_EVENTS) or is_marker(record):
                break
            taken.append(record)
        taken.reverse()
        records = page_events(taken)
        first = count - len(records) + 1
        self._events.extend((first + i, record) for i, record in enumerate(records))
        self._sent = count
        return records, first, new - len(records)

    def _new_points(self, state: RunState, now: float) -> dict[str, list[list[Any]]]:
        added: dict[str, list[list[Any]]] = {}
        for name, (source_of, point_of) in _SERIES.items():
            source = source_of(state)
            if name in self._series_from and self._series_from[name] == source:
                continue
            self._series_from[name] = source
            point = [now, *point_of(state)]
            untrained = name == "trainer" and state.trainer.step == 0 and state.trainer.loss is None
            if not untrained and self._series[name].offer(point):
                added[name] = [point]
        return added

    # -- what the tabs read ------------------------------------------------------------------------

    def _snapshot(self) -> dict[str, Any]:
        events = list(self._events)
        start = len(events)  # the newest run of consecutive numbers only: a hole cannot be numbered across
        while start > 0 and (start == len(events) or events[start - 1][0] == events[start][0] - 1):
            start -= 1
        kept = events[start:]
        return {
            "stream_id": self.stream_id(),
            "link": self._link,
            "state": self._projector.current(),
            "events": [record for _n, record in kept],
            "first": kept[0][0] if kept else self._sent + 1,
            "series": {name: list(series.points) for name, series in self._series.items()},
        }

    def snapshot(self) -> dict[str, Any]:
        """Everything the page shows, at the current stream position (``GET /api/snapshot``)."""
        with self._cond:
            return self._snapshot()

    def _resume_from(self, last_id: str | None) -> int | None:
        """The frame number ``last_id`` names, when the ring still holds every frame after it."""
        if not last_id or not last_id.startswith(f"{self.epoch}-"):
            return None
        try:
            n = int(last_id.rsplit("-", 1)[1])
        except ValueError:
            return None
        oldest = self._ring[0][0] if self._ring else self._n + 1
        return n if oldest - 1 <= n <= self._n else None

    def _wait_past(self, at: int) -> None:
        """Wait (holding the condition) for a frame after ``at``, the server's stop, or the ping interval."""
        self._cond.wait_for(lambda: self._n > at or self._stop.is_set(), timeout=PING_S)

    def serve(self, out: BinaryIO, last_id: str | None, extra: Callable[[dict[str, Any]], None]) -> None:
        """Write the stream to one tab until it goes away or the server stops. ``extra`` adds what is the
        tab's own (whether it holds control) to each snapshot it is sent."""
        with self._cond:
            at = self._resume_from(last_id)
            if at is None:
                body = self._snapshot()
                extra(body)
                pending = [frame("snapshot", body, body["stream_id"])]
                at = self._n
            else:  # what the ring holds after the tab's last frame goes out at once, with the retry line
                pending = [data for n, data in self._ring if n > at]
                at = self._n
        out.write(b"retry: 1000\n\n" + b"".join(pending))
        out.flush()
        while not self._stop.is_set():
            with self._cond:
                self._wait_past(at)
                frames = [(n, data) for n, data in self._ring if n > at]
                if frames and frames[0][0] > at + 1:  # fell behind the ring: start over
                    body = self._snapshot()
                    extra(body)
                    frames = [(self._n, frame("snapshot", body, body["stream_id"]))]
            if self._stop.is_set():
                return
            if frames:
                at = frames[-1][0]
                out.write(b"".join(data for _n, data in frames))
            else:
                out.write(b"event: ping\ndata: {}\n\n")
            out.flush()
