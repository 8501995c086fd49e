"""The live dashboard: a source of frozen state, the UI's own state, keys from the terminal, a refresh loop.

The loop pulls the latest snapshot once per refresh tick and draws only when something shown changed (or
a key was pressed, or the terminal was resized), so a flood of events costs one render per tick, not one
per event. Per-second rates come from a short history of snapshots kept here, not in the panels.

Keys are read raw from the TTY in cbreak mode (no echo, no line buffering) by a reader thread; the
terminal's settings are put back on every way out: ``q``, Ctrl+C, SIGTERM, SIGHUP or an exception.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from types import FrameType
from typing import Protocol

from rich.console import Console, RenderableType
from rich.live import Live
from rich.text import Text

from heidi_engine.bus.connection import ConnectionFileError, read_bus_info
from heidi_engine.bus.journal import tail_records
from heidi_engine.bus.ledger import LedgerLost, replay
from heidi_engine.bus.state import RunState
from heidi_engine.ui.dashboard.controls import RunControl
from heidi_engine.ui.dashboard.frame import VIEWS, Cursor, Frame, Link, Rates
from heidi_engine.ui.dashboard.keys import Keyboard
from heidi_engine.ui.dashboard.screen import body_rows, render, view_overflow
from heidi_engine.ui.dashboard.views.events import event_window, events_rows, matches
from heidi_engine.ui.text import safe
from heidi_engine.ui.viewer import EVENT_LOG, LiveView

Record = Mapping[str, object]
# Twice a second reads as live and keeps a dashboard under 5% of a core while 1,000 events/s flow
# (bench/bench_dashboard_cpu.py); --refresh raises it.
DEFAULT_REFRESH_HZ = 2.0
_PID_CHECK_S = 1.0


@dataclass(frozen=True)
class Feed:
    """What a source offers at one instant; ``version`` changes whenever anything in it does."""

    state: RunState
    link: Link
    events: tuple[Record, ...]
    version: tuple[object, ...]


class Source(Protocol):
    """Where the dashboard's state comes from: a live supervisor or a finished run's files."""

    def read(self) -> Feed:
        """The current feed (cheap; called once per refresh tick)."""

    def refresh(self) -> None:
        """Re-read what can be re-read (the ``r`` key)."""

    def close(self) -> None:
        """Release threads and sockets."""


def _pid_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


class LiveSource:
    """A :class:`LiveView` on the home's supervisor, plus a check that its process still exists.

    Silence alone takes ``stale_after_s`` to notice; a supervisor killed outright is noticed within a
    second by its pid in the connection file.
    """

    def __init__(
        self, home: Path, *, stale_after_s: float = 3.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.home = home
        self.view = LiveView(home, sender="dash", stale_after_s=stale_after_s).start()
        self._clock = clock
        self._checked_at = -_PID_CHECK_S
        self._gone = False
        self._down: str | None = None

    def _check(self) -> None:
        """Once a second: is the supervisor's process gone, and did it leave cleanly (file removed)?"""
        now = self._clock()
        if now - self._checked_at < _PID_CHECK_S:
            return
        self._checked_at = now
        try:
            info = read_bus_info(self.home)
        except ConnectionFileError:
            # A clean shutdown removes the connection file; a kill -9 leaves it behind.
            self._gone, self._down = False, "shut down"
            return
        self._gone = not info.remote and _pid_gone(info.pid)  # a remote pid is not ours to check
        self._down = "exited" if self._gone else "silent"

    def read(self) -> Feed:
        """The latest view, with the link marked down when the supervisor's process is gone."""
        view = self.view.latest()
        self._check()
        connected = view.connected and not self._gone
        error = view.error
        if not connected and self._gone:
            error = error or "the supervisor's process has exited"
        down = None if connected else self._down
        if down == "silent" and view.silence_s is None:
            down = "connecting"
        link = Link("live", connected, view.silence_s, error, view.seq, down=down)
        silence = None if connected or view.silence_s is None else int(view.silence_s)
        version = (view.seq, connected, error, silence, view.state.run_id, view.state.event_count, down)
        return Feed(view.state, link, view.events, version)

    def refresh(self) -> None:
        """Nothing to re-read: the subscriber is always current."""

    def close(self) -> None:
        """Stop the subscriber thread."""
        self.view.close()


class ReplaySource:
    """A finished run rebuilt from its files with the supervisor's own reducer; no supervisor needed."""

    def __init__(self, run_dir: Path, label: str) -> None:
        self.run_dir = run_dir
        self.label = label
        self._loads = 0
        self._feed = self._load()

    def _load(self) -> Feed:
        state = replay(self.run_dir)
        events = tail_records(self.run_dir, EVENT_LOG)
        self._loads += 1
        link = Link("replay", False, None, None, state.seq, self.label)
        return Feed(state, link, tuple(events), ("replay", self._loads))

    def read(self) -> Feed:
        """The run as last read from disk."""
        return self._feed

    def refresh(self) -> None:
        """Re-read the files (a run still being written shows its progress; one whose ledger was lost
        meanwhile, as last read)."""
        with contextlib.suppress(LedgerLost):
            self._feed = self._load()

    def close(self) -> None:
        """Nothing is held open."""


_RATE_FIELDS = ("requests_sent", "input_tokens", "output_tokens", "teacher_generated", "train_step", "events")


def _rate_values(state: RunState) -> tuple[float, ...]:
    usage, counters = state.usage, state.counters
    return (
        float(usage.get("requests_sent") or 0),
        float(usage.get("input_tokens") or 0),
        float(usage.get("output_tokens") or 0),
        float(counters.get("teacher_generated", 0)),
        float(state.trainer.step),
        float(state.event_count),
    )


class RateMeter:
    """Per-second rates from the deltas between snapshots over a sliding window.

    A new run, or any count going backwards (a new round's trainer, a restarted supervisor), starts
    the history afresh rather than report a negative or a mixed rate.
    """

    def __init__(self, window_s: float = 5.0, min_span_s: float = 0.5) -> None:
        self.window_s = window_s
        self.min_span_s = min_span_s
        self._run: str | None = None
        self._history: deque[tuple[float, tuple[float, ...]]] = deque()

    def update(self, now: float, state: RunState) -> Rates:
        """Record ``state`` as seen at monotonic time ``now`` and return the current rates."""
        values = _rate_values(state)
        history = self._history
        if state.run_id != self._run or (
            history and any(v < p for v, p in zip(values, history[-1][1], strict=True))
        ):
            history.clear()
            self._run = state.run_id
        history.append((now, values))
        while len(history) > 2 and now - history[1][0] >= self.window_s:
            history.popleft()
        first_t, first = history[0]
        span = now - first_t
        if span < self.min_span_s:
            return Rates()
        rates = [(v - f) / span for v, f in zip(values, first, strict=True)]
        return Rates(*rates)


@dataclass
class UiState:
    """What the user chose: the view, help, the event view's scroll and filter, and whether to quit."""

    view: int = 1
    help: bool = False
    cursor: Cursor = field(default_factory=Cursor)
    quit: bool = False
    refresh: bool = False


def _scroll(ui: UiState, delta: int) -> None:
    ui.cursor = replace(ui.cursor, scroll=max(0, ui.cursor.scroll + delta))


def handle_key(ui: UiState, key: str, page: int) -> None:
    """Apply one key (a character, or a name such as ``up``/``pgdn``/``esc``/``enter``) to ``ui``."""
    cursor = ui.cursor
    if cursor.prompt is not None:
        if key == "enter":
            ui.cursor = Cursor(scroll=0, filter=cursor.prompt.strip())
        elif key == "esc":
            ui.cursor = replace(cursor, prompt=None)
        elif key == "backspace":
            ui.cursor = replace(cursor, prompt=cursor.prompt[:-1])
        elif len(key) == 1 and key.isprintable() and len(cursor.prompt) < 80:
            ui.cursor = replace(cursor, prompt=cursor.prompt + key)
        return
    if key == "q":
        ui.quit = True
    elif key == "r":
        ui.refresh = True
    elif key in ("1", "2", "3", "4", "5", "6"):
        ui.view, ui.help = int(key), False
        ui.cursor = replace(cursor, offset=0)
    elif key in ("tab", "right", "backtab", "left"):
        step = 1 if key in ("tab", "right") else -1
        ui.view, ui.help = (ui.view - 1 + step) % len(VIEWS) + 1, False
        ui.cursor = replace(cursor, offset=0)
    elif key == "?":
        ui.help = not ui.help
        ui.cursor = replace(cursor, offset=0)
    elif key == "esc":
        ui.help = False
        ui.cursor = replace(cursor, detail=False)
    elif key == "/":
        ui.view, ui.help = 4, False
        ui.cursor = replace(cursor, prompt="")  # a new filter; Enter on empty clears the old one
    elif ui.view == 4 and not ui.help:
        moves = {"up": 1, "k": 1, "down": -1, "j": -1, "pgup": page, "pgdn": -page}
        if key in moves:
            _scroll(ui, moves[key])
        elif key in ("home", "g"):
            _scroll(ui, 1 << 30)
        elif key in ("end", "G"):
            ui.cursor = replace(cursor, scroll=0)
        elif key == "enter":
            ui.cursor = replace(cursor, detail=not cursor.detail)
    else:
        # Every other view (and the help) scrolls when it does not fit; the offset is clamped on drawing.
        moves = {"up": -1, "k": -1, "down": 1, "j": 1, "pgup": -page, "pgdn": page}
        if key in moves:
            ui.cursor = replace(cursor, offset=max(0, cursor.offset + moves[key]))
        elif key in ("home", "g"):
            ui.cursor = replace(cursor, offset=0)
        elif key in ("end", "G"):
            ui.cursor = replace(cursor, offset=1 << 30)


class Dashboard:
    """Draws a :class:`Source` on a console: ``frame()`` builds the current screen's input, ``run()`` loops."""

    def __init__(
        self,
        source: Source,
        console: Console,
        *,
        refresh_hz: float = DEFAULT_REFRESH_HZ,
        view: int = 1,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
        control: RunControl | None = None,
    ) -> None:
        if not 1 <= view <= len(VIEWS):
            raise ValueError(f"view must be 1-{len(VIEWS)}, got {view}")
        self.source = source
        self.console = console
        self.period_s = 1.0 / refresh_hz
        self.ui = UiState(view=view)
        self.meter = RateMeter()
        self._clock = clock
        self._wall = wall
        self._rates = Rates()
        self._feed: Feed | None = None
        self._seen_events = 0
        self.hung_up = False
        self.control = control  # p/u/s on a live supervisor; None when replaying files

    def _page(self) -> int:
        return events_rows(body_rows(self.console.size.height))

    def tick(self) -> Feed:
        """Read the source and update the rates (once per refresh period)."""
        feed = self.source.read()
        self._rates = self.meter.update(self._clock(), feed.state)
        self._follow(feed)
        self._feed = feed
        return feed

    def _follow(self, feed: Feed) -> None:
        # While scrolled back, new matching events arrive below: move the offset so the rows stay put.
        count = feed.state.event_count
        new, self._seen_events = count - self._seen_events, count
        cursor = self.ui.cursor
        if cursor.scroll and 0 < new <= len(feed.events):
            needle = cursor.filter.lower()
            arrived = sum(1 for e in feed.events[-new:] if matches(e, needle)) if needle else new
            self.ui.cursor = replace(cursor, scroll=cursor.scroll + arrived)

    def key(self, key: str) -> None:
        """Handle one key; a scroll is clamped to the log so that reversing it acts at once."""
        if self.control is not None and self.ui.cursor.prompt is None and self.control.key(key):
            return
        handle_key(self.ui, key, self._page())
        if self.ui.refresh:
            self.ui.refresh = False
            self.source.refresh()
            self._feed = None
        feed = self._feed or self.tick()
        cursor = self.ui.cursor
        if cursor.offset:
            size = self.console.size
            limit = view_overflow(self.frame(), size.width, size.height)
            self.ui.cursor = cursor = replace(cursor, offset=min(cursor.offset, limit))
        if cursor.scroll:
            window = event_window(
                feed.events or feed.state.recent_events, cursor.filter, cursor.scroll, self._page()
            )
            self.ui.cursor = replace(cursor, scroll=window.scroll)

    def frame(self) -> Frame:
        """The frame for the current feed and UI state."""
        feed = self._feed or self.tick()
        ui = self.ui
        notice = self.control.notice() if self.control is not None else None
        return Frame(
            feed.state, feed.link, self._wall(), ui.view, feed.events, self._rates, ui.cursor, ui.help, notice
        )

    def draw(self, live: Live) -> None:
        """Render the current frame at the console's present size."""
        size = self.console.size
        try:
            screen: RenderableType = render(self.frame(), size.width, size.height)
        except Exception as exc:  # a viewer must outlive a state it cannot draw, and say why
            screen = Text(f"cannot draw this state: {safe(repr(exc), 300)}\nq quits.", style="bold red")
        live.update(screen, refresh=True)

    def run(self, keyboard: Keyboard | None) -> int:
        """Show the dashboard until ``q`` (or a signal); returns the exit code."""
        wake: queue.SimpleQueue[str] = keyboard.keys if keyboard is not None else queue.SimpleQueue()
        live = Live(
            console=self.console,
            screen=True,
            auto_refresh=False,
            redirect_stdout=False,
            redirect_stderr=False,
        )
        with _signals(wake, self._hang_up):
            try:
                live.start()
                try:
                    self._loop(live, wake)
                finally:
                    live.stop()
            except OSError:
                # After a hang-up the terminal is gone: writing to it fails and there is nothing to restore.
                if not self.hung_up:
                    raise
        return 0

    def _hang_up(self) -> None:
        self.hung_up = True

    def _loop(self, live: Live, wake: queue.SimpleQueue[str]) -> None:
        shown: tuple[object, ...] | None = None
        next_tick = self._clock()
        while not self.ui.quit:
            timeout = max(0.0, next_tick - self._clock())
            dirty = False
            with contextlib.suppress(queue.Empty):
                key: str | None = wake.get(timeout=timeout)
                while key is not None:
                    if key in ("quit", "hangup"):
                        self.ui.quit = True
                        self.hung_up = self.hung_up or key == "hangup"
                    elif key == "resize":
                        dirty = True
                    else:
                        self.key(key)
                        dirty = True
                    key = wake.get_nowait() if not wake.empty() else None
            if self.ui.quit:
                break
            now = self._clock()
            if now >= next_tick:
                next_tick = max(next_tick + self.period_s, now)
                self.tick()
            feed = self._feed or self.tick()
            # The clock's second is part of what is shown (elapsed time, "last heard N s ago").
            version = (*feed.version, int(self._wall().timestamp()), self.console.size)
            if dirty or version != shown:
                shown = version
                self.draw(live)


@contextlib.contextmanager
def _signals(wake: queue.SimpleQueue[str], on_hangup: Callable[[], None]) -> Iterator[None]:
    """SIGTERM/SIGHUP quit through the loop (so the terminal is restored); SIGWINCH redraws."""

    def quit_(signum: int, _frame: FrameType | None) -> None:
        if signum == signal.SIGHUP:
            on_hangup()
        wake.put("quit")  # SimpleQueue.put is safe to call from a signal handler.

    def resize(_signum: int, _frame: FrameType | None) -> None:
        wake.put("resize")

    handlers = {signal.SIGTERM: quit_, signal.SIGHUP: quit_, signal.SIGWINCH: resize}
    previous = {sig: signal.signal(sig, handler) for sig, handler in handlers.items()}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
