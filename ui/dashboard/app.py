"""The live dashboard: a source of frozen state (:mod:`~heidi_engine.ui.dashboard.source`), the UI's own state, keys from the terminal, a refresh loop.

The loop pulls the latest snapshot once per refresh tick and draws only what changed, never more often
than that (a key is answered at once): the whole screen when the data, the size or the UI state did, the
header alone when only the clock's second moved (elapsed time, "last heard N s ago"), nothing otherwise.
The :class:`Painter` then writes only the rows that differ from what the terminal shows, so a flood of
events costs one render per tick, not one per event, and an idle dashboard one header row a second.
Per-second rates come from a short history of snapshots kept here, not in the panels.

Keys are read raw from the TTY in cbreak mode (no echo, no line buffering) by a reader thread; the
terminal's settings are put back on every way out: ``q``, Ctrl+C, SIGTERM, SIGHUP or an exception.
"""

from __future__ import annotations

import contextlib
import functools
import queue
import signal
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from types import FrameType

from rich.console import Console, ConsoleOptions, RenderResult
from rich.control import Control
from rich.segment import Segment
from rich.text import Text

from heidi_engine.bus.state import RunState
from heidi_engine.ui.dashboard.controls import RunControl
from heidi_engine.ui.dashboard.frame import VIEWS, Cursor, Frame, Rates
from heidi_engine.ui.dashboard.keys import Keyboard
from heidi_engine.ui.dashboard.screen import (
    body_rows,
    body_shows_clock,
    header_rows,
    render_rows,
    view_overflow,
)
from heidi_engine.ui.dashboard.source import Feed, LiveSource, ReplaySource, Source
from heidi_engine.ui.dashboard.views.events import event_window, events_rows, matches
from heidi_engine.ui.text import safe

__all__ = [
    "DEFAULT_REFRESH_HZ", "Dashboard", "Feed", "LiveSource", "Painter", "RateMeter", "ReplaySource", "Source",
    "UiState", "handle_key",
]  # fmt: skip

# Twice a second reads as live and keeps a dashboard under 2% of a core while 1,000 events/s flow
# (bench/bench_dashboard_cpu.py); --refresh raises it.
DEFAULT_REFRESH_HZ = 2.0


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


class _Patch:
    """Rows written in place: the cursor moved to each row, then its cells (no newline, so no scroll)."""

    def __init__(self, rows: list[tuple[int, list[Segment]]]) -> None:
        self.rows = rows

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        for y, line in self.rows:
            yield Control.move_to(0, y)
            yield from line


class Painter:
    """The alternate screen as rows: a paint writes only the rows that differ from what is shown.

    Rows are compared as text and styles before any rendering, so an unchanged row costs a comparison.
    A new terminal size, or :meth:`forget`, makes the next paint write every row it is given.
    """

    def __init__(self, console: Console) -> None:
        self.console = console
        self._size: tuple[int, int] | None = None
        self._shown: list[object] = []

    def start(self) -> None:
        self.console.set_alt_screen(True)
        self.console.show_cursor(False)

    def stop(self) -> None:
        self.console.show_cursor(True)
        self.console.set_alt_screen(False)

    def forget(self) -> None:
        """Assume nothing is shown (a resize, a resumed process, the ``r`` key)."""
        self._size = None

    def paint(self, rows: list[Text]) -> int:
        """Show ``rows`` from the top row down, each cropped or padded to the width; how many were written."""
        console = self.console
        width, height = size = tuple(console.size)
        if size != self._size:
            self._size, self._shown = (width, height), [None] * height
        patch = []
        for y, row in enumerate(rows[:height]):
            key = (row.plain, row.style, tuple(row.spans))
            if key != self._shown[y]:
                self._shown[y] = key
                patch.append((y, _cells(console, row, width)))
        if patch:
            console.print(_Patch(patch), end="", crop=False)
        return len(patch)


def _cells(console: Console, row: Text, width: int) -> list[Segment]:
    """``row`` as exactly ``width`` cells on one line (a stray newline or tab would move the cursor)."""
    plain = row.plain
    if "\n" in plain or "\t" in plain:
        row = row.copy()
        row.plain = plain.replace("\n", " ")
        row.expand_tabs()
    if row.spans:
        segments = list(row.render(console))
    else:  # without spans, Text.render drops the row's own style
        segments = [Segment(row.plain, console.get_style(row.style) if row.style else None)]
    return Segment.adjust_line_length(segments, width, pad=True)


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
        self._last_row: object = None  # the newest row of the log last drawn
        self.hung_up = False
        self.control = control  # p/u/s on a live supervisor; None when replaying files
        self.painter = Painter(console)
        self._shown: tuple[object, ...] | None = None
        self._second: int | None = None
        self._failed = False

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
        # While scrolled back, new matching rows arrive below: move the offset so the rows stay put. Rows,
        # not events: the feed may leave events out (one marker row for them) and pages load above.
        rows = feed.events
        last, self._last_row = self._last_row, (rows[-1] if rows else None)
        cursor = self.ui.cursor
        if not cursor.scroll or last is None:
            return
        new = next((back for back in range(len(rows)) if rows[-1 - back] is last), 0)
        if new:
            needle = cursor.filter.lower()
            arrived = sum(1 for e in rows[-new:] if matches(e, needle)) if needle else new
            self.ui.cursor = replace(cursor, scroll=cursor.scroll + arrived)

    def key(self, key: str) -> None:
        """Handle one key; a scroll is clamped to the log so that reversing it acts at once."""
        if self.control is not None and self.ui.cursor.prompt is None:
            status = (self._feed or self.tick()).state.status
            if self.control.key(key, status):
                return
        handle_key(self.ui, key, self._page())
        if self.ui.refresh:
            self.ui.refresh = False
            self.source.refresh()
            self._feed = None
            self.painter.forget()  # and repaint every row, whatever may have scribbled on the terminal
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

    def paint(self, forced: bool = False) -> str | None:
        """Draw what changed since the last paint: ``"full"``; ``"header"`` when only the clock's second
        moved (the views are not even asked); ``None`` when nothing did. ``forced``: a key was pressed."""
        feed = self._feed or self.tick()
        frame = self.frame()
        width, height = self.console.size
        second = int(frame.now.timestamp())
        ui = self.ui
        shown = (feed.version, self._rates, width, height, ui.view, ui.help, ui.cursor, frame.notice,
                 second if body_shows_clock(frame) else None)  # fmt: skip
        if not forced and shown == self._shown:
            if second == self._second:
                return None
            self._second = second
            if not self._failed:
                self.painter.paint(self._rows(lambda: header_rows(frame, width, height), height))
                return "header"
        self._shown, self._second, self._failed = shown, second, False
        self.painter.paint(self._rows(lambda: render_rows(frame, width, height), height))
        return "full"

    def _rows(self, draw: Callable[[], list[Text]], height: int) -> list[Text]:
        try:
            return draw()
        except Exception as exc:  # a viewer must outlive a state it cannot draw, and say why
            self._failed = True
            why = Text(f"cannot draw this state: {safe(repr(exc), 300)}", style="bold red")
            return [why, Text("q quits.", style="bold red"), *[Text()] * max(0, height - 2)]

    def run(self, keyboard: Keyboard | None) -> int:
        """Show the dashboard until ``q`` (or a signal); returns the exit code."""
        wake: queue.SimpleQueue[str] = keyboard.keys if keyboard is not None else queue.SimpleQueue()
        with _signals(wake, self._hang_up):
            try:
                self.painter.start()
                try:
                    self._loop(functools.partial(_keys, wake))
                finally:
                    self.painter.stop()
            except OSError:
                # After a hang-up the terminal is gone: writing to it fails and there is nothing to restore.
                if not self.hung_up:
                    raise
        return 0

    def _hang_up(self) -> None:
        self.hung_up = True

    def _loop(self, wait: Callable[[float], list[str]]) -> None:
        """Read the source and paint once per refresh period, never more often; a key paints at once."""
        next_tick = self._clock()
        while not self.ui.quit:
            pressed = self._take(wait(max(0.0, next_tick - self._clock())))
            if self.ui.quit:
                break
            now = self._clock()
            if now >= next_tick:
                next_tick = max(next_tick + self.period_s, now)
                self.tick()
            elif not pressed:
                continue
            self.paint(forced=pressed)

    def _take(self, keys: list[str]) -> bool:
        """Apply the keys and signals read; whether any of them changes the screen."""
        pressed = False
        for key in keys:
            if key in ("quit", "hangup"):
                self.ui.quit = True
                self.hung_up = self.hung_up or key == "hangup"
            elif key == "resize":
                self.painter.forget()
                pressed = True
            else:
                self.key(key)
                pressed = True
        return pressed


def _keys(wake: queue.SimpleQueue[str], timeout: float) -> list[str]:
    """The keys and signals queued within ``timeout`` seconds: the first to come and all behind it."""
    try:
        keys = [wake.get(timeout=timeout)]
    except queue.Empty:
        return []
    while not wake.empty():
        keys.append(wake.get_nowait())
    return keys


@contextlib.contextmanager
def _signals(wake: queue.SimpleQueue[str], on_hangup: Callable[[], None]) -> Iterator[None]:
    """SIGTERM/SIGHUP quit through the loop (so the terminal is restored); SIGWINCH and SIGCONT repaint."""

    def quit_(signum: int, _frame: FrameType | None) -> None:
        if signum == signal.SIGHUP:
            on_hangup()
        wake.put("quit")  # SimpleQueue.put is safe to call from a signal handler.

    def resize(_signum: int, _frame: FrameType | None) -> None:
        wake.put("resize")

    handlers = {signal.SIGTERM: quit_, signal.SIGHUP: quit_, signal.SIGWINCH: resize, signal.SIGCONT: resize}
    previous = {sig: signal.signal(sig, handler) for sig, handler in handlers.items()}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
