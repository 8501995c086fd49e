"""The dashboard redraws only what changed, never more often than its refresh rate: a new second alone
redraws the header (the views are not asked), a data change the screen, and either leaves the terminal
showing what a draw from scratch shows. What it writes is replayed on a small terminal model, cell by
cell with each cell's style, so the comparison is of the screen a user would see."""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from datetime import timedelta
from itertools import pairwise
from typing import Any

import pytest
from harness import FakeClock
from rich.cells import cell_len
from rich.console import Console
from ui_builders import NOW, busy_state, make_events, make_frame, make_state

from heidi_engine.bus.outage import TeacherOutage
from heidi_engine.bus.state import RunState
from heidi_engine.ui.dashboard import screen as screen_module
from heidi_engine.ui.dashboard.app import Dashboard, Feed
from heidi_engine.ui.dashboard.frame import VIEWS, Link
from heidi_engine.ui.dashboard.screen import HEADER_ROWS, body_shows_clock, render, render_rows

_CSI = re.compile(r"\x1b\[([0-9;?]*)([A-Za-z])")
_GARBAGE = ("?", "garbage")
OUTAGE = TeacherOutage(state="parked", since="2024-02-15T12:35:00Z", retry_every_s=30.0,
                       next_probe_at="2024-02-15T12:40:12Z", jobs_waiting=3, reason="HTTP 503")  # fmt: skip


class Terminal:
    """The console's file and enough of a terminal to replay it: cursor moves, styles, cells.

    Cells never written read as garbage, so a row the dashboard forgets to draw shows."""

    def __init__(self, width: int, height: int) -> None:
        self.cells: list[list[tuple[str, str]]] = []
        self.resize(width, height)
        self.x = self.y = 0
        self.style = ""
        self.moves: list[int] = []  # the rows the cursor was sent to, since the last look

    def resize(self, width: int, height: int) -> None:
        old = self.cells
        self.cells = [[_GARBAGE] * width for _ in range(height)]
        for y, row in enumerate(old[:height]):
            self.cells[y][: min(width, len(row))] = row[:width]
        self.width, self.height = width, height

    def write(self, data: str) -> int:
        pos = 0
        for match in _CSI.finditer(data):
            self._text(data[pos : match.start()])
            params, command = match.groups()
            if command == "H":
                row, col = (int(n) for n in params.split(";"))
                self.y, self.x = row - 1, col - 1
                self.moves.append(self.y)
            elif command == "m":
                self.style = "" if params in ("", "0") else params
            pos = match.end()
        self._text(data[pos:])
        return len(data)

    def flush(self) -> None:
        """Nothing is buffered."""

    def _text(self, text: str) -> None:
        assert "\n" not in text and "\r" not in text, f"a line break on an addressed screen: {text!r}"
        for char in text:
            width = cell_len(char)
            for offset in range(width):
                if self.y < self.height and self.x + offset < self.width:
                    self.cells[self.y][self.x + offset] = (char if offset == 0 else "", self.style)
            self.x += width

    def rows(self) -> list[str]:
        return ["".join(char for char, _ in row) for row in self.cells]

    def take_moves(self) -> list[int]:
        moves, self.moves = self.moves, []
        return moves


class Source:
    """A feed the test changes by hand; every change bumps its version, as a new seq would."""

    def __init__(self, state: RunState | None = None) -> None:
        self.state = state or make_state()
        self.events = make_events(60)
        self.link = Link("live", True, 0.1, None, 7)
        self.version = 0

    def change(self, **fields: Any) -> None:
        for name, value in fields.items():
            setattr(self.state, name, value)
        self.version += 1

    def read(self) -> Feed:
        return Feed(self.state, self.link, self.events, (self.version,))

    def refresh(self) -> None:
        """Nothing to re-read."""

    def close(self) -> None:
        """Nothing held."""


def dashboard(
    source: Source, clock: FakeClock, *, view: int = 1, size: tuple[int, int] = (120, 40), hz: float = 2.0
) -> tuple[Dashboard, Terminal]:
    terminal = Terminal(*size)
    console = Console(file=terminal, width=size[0], height=size[1], force_terminal=True,
                      color_system="truecolor", legacy_windows=False, no_color=False)  # fmt: skip
    dash = Dashboard(source, console, refresh_hz=hz, view=view, clock=clock.time,
                     wall=lambda: NOW + timedelta(seconds=clock.now))  # fmt: skip
    return dash, terminal


def drawn(source: Source, clock: FakeClock, **kwargs: Any) -> tuple[Dashboard, Terminal]:
    """A dashboard drawn once its rates are measurable (a second in), so that a tick changes only the clock."""
    dash, terminal = dashboard(source, clock, **kwargs)
    assert dash.paint() == "full"
    clock.sleep(1.0)
    dash.tick()
    dash.paint()
    terminal.take_moves()
    return dash, terminal


def from_scratch(source: Source, clock: FakeClock, dash: Dashboard) -> Terminal:
    """The terminal after one full draw of the same source, view and size, at the same instant."""
    size = dash.console.size
    fresh, terminal = dashboard(source, clock, view=dash.ui.view, size=(size.width, size.height))
    fresh.tick()
    fresh._rates = dash._rates  # as measured over the time the other has run
    assert fresh.paint() == "full"
    return terminal


@pytest.mark.parametrize("view", range(1, len(VIEWS) + 1))
def test_a_new_second_alone_redraws_the_header_and_the_screen_is_a_full_draws(view: int) -> None:
    source, clock = Source(), FakeClock()
    dash, terminal = dashboard(source, clock, view=view)
    assert dash.paint() == "full"
    assert set(terminal.take_moves()) == set(range(40))
    dash, terminal = drawn(source, clock, view=view)
    before = terminal.rows()
    assert "elapsed 5m 05s" in before[0] and all(_GARBAGE[0] * 5 not in row for row in before)
    clock.sleep(1.0)
    dash.tick()
    assert dash.paint() == "header"
    assert terminal.take_moves() == [0]  # the elapsed time's row, and nothing else
    assert "elapsed 5m 06s" in terminal.rows()[0] and terminal.rows()[1:] == before[1:]
    assert terminal.cells == from_scratch(source, clock, dash).cells
    assert dash.paint() is None  # the same second again: nothing to draw


def test_a_full_draw_shows_what_render_gives() -> None:
    source, clock = Source(busy_state()), FakeClock()
    for view in range(1, len(VIEWS) + 1):
        dash, terminal = dashboard(source, clock, view=view, size=(100, 30))
        dash.paint()
        console = Console(width=100, height=30, record=True, color_system=None, file=io.StringIO())
        console.print(render(dash.frame(), 100, 30))
        printed = console.export_text().rstrip("\n").split("\n")
        assert [row.rstrip() for row in terminal.rows()] == [row.rstrip() for row in printed]


def test_a_clock_tick_never_asks_the_views_and_a_data_change_does(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    for number, draw in list(screen_module._VIEW_RENDERERS.items()):
        monkeypatch.setitem(screen_module._VIEW_RENDERERS, number, _counted(draw, calls, number))
    source, clock = Source(), FakeClock()
    dash, terminal = drawn(source, clock)
    assert calls
    calls.clear()
    for _ in range(5):
        clock.sleep(1.0)
        dash.tick()
        assert dash.paint() == "header"
    assert calls == []
    counters = {**source.state.counters, "teacher_generated": 4321}
    source.change(counters=counters)
    clock.sleep(0.5)
    dash.tick()
    assert dash.paint() == "full" and calls
    assert any("4,321" in row for row in terminal.rows())
    assert terminal.cells == from_scratch(source, clock, dash).cells


def _counted(draw: Callable[..., Any], calls: list[int], number: int) -> Callable[..., Any]:
    def counted(*args: Any) -> Any:
        calls.append(number)
        return draw(*args)

    return counted


def test_a_body_that_shows_the_clock_is_redrawn_with_it() -> None:
    source, clock = Source(make_state(teacher_outage=OUTAGE)), FakeClock()
    dash, terminal = drawn(source, clock, size=(160, 40))
    assert any("next in 11s" in row for row in terminal.rows())
    clock.sleep(1.0)
    dash.tick()
    assert dash.paint() == "full"
    assert any("next in 10s" in row for row in terminal.rows())
    assert terminal.cells == from_scratch(source, clock, dash).cells


@pytest.mark.parametrize("view", [*range(1, len(VIEWS) + 1), "help"])
@pytest.mark.parametrize("outage", [None, OUTAGE])
def test_only_a_body_said_to_show_the_clock_changes_with_it(view: int | str, outage: TeacherOutage | None) -> None:
    for state in (make_state(teacher_outage=outage), busy_state()):
        frame = make_frame(state=state, view=1 if view == "help" else view, help=view == "help")
        later = make_frame(state=state, view=frame.view, help=frame.help, now=NOW + timedelta(seconds=61))
        body, body_later = (render_rows(f, 140, 40)[HEADER_ROWS:] for f in (frame, later))
        assert body_shows_clock(frame) or body == body_later


def test_a_resize_redraws_every_row_at_the_new_size() -> None:
    source, clock = Source(), FakeClock()
    dash, terminal = dashboard(source, clock)
    dash.paint()
    for width, height in ((90, 30), (140, 45), (140, 45)):
        dash.console.size = (width, height)
        terminal.resize(width, height)
        terminal.take_moves()
        clock.sleep(0.5)
        dash.tick()
        painted = dash.paint()
        assert terminal.cells == from_scratch(source, clock, dash).cells
        assert all(_GARBAGE not in row for row in terminal.cells)
        if painted == "full":
            assert sorted(set(terminal.take_moves())) == list(range(height))


def test_r_and_a_resize_signal_repaint_every_row() -> None:
    source, clock = Source(), FakeClock()
    dash, terminal = dashboard(source, clock)
    dash.paint()
    terminal.cells = [[_GARBAGE] * 120 for _ in range(40)]  # something scribbled over the screen
    terminal.take_moves()
    assert dash._take(["resize"])
    dash.paint(forced=True)
    assert sorted(terminal.take_moves()) == list(range(40))
    terminal.cells[5][5] = _GARBAGE
    dash.key("r")
    dash.paint(forced=True)
    assert terminal.cells == from_scratch(source, clock, dash).cells


def test_a_state_it_cannot_draw_stays_said_over_clock_ticks(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_args: Any) -> Any:
        raise KeyError("no such counter")

    monkeypatch.setitem(screen_module._VIEW_RENDERERS, 1, broken)
    source, clock = Source(), FakeClock()
    dash, terminal = drawn(source, clock)
    clock.sleep(1.0)
    dash.tick()
    assert dash.paint() == "full"  # not the header over the message
    rows = terminal.rows()
    assert rows[0].startswith("cannot draw this state: KeyError") and rows[1].startswith("q quits.")
    assert all(not row.strip() for row in rows[2:])


def _minute(
    dash: Dashboard, clock: FakeClock, on_wake: Callable[[], None], keys_at: float | None = None
) -> list[str]:
    """Run the loop for a simulated minute, woken early and often (every 30 ms at most); what it painted."""
    painted: list[str] = []
    paint = dash.paint

    def counted(forced: bool = False) -> str | None:
        what = paint(forced)
        if what is not None:
            painted.append(f"{what}@{clock.now:.2f}{'*' if forced else ''}")
        return what

    def wait(timeout: float) -> list[str]:
        start = clock.now
        clock.sleep(min(timeout, 0.03))
        on_wake()
        if clock.now >= 60.0:
            return ["quit"]
        return ["2"] if keys_at is not None and start < keys_at <= clock.now else []

    dash.paint = counted  # type: ignore[method-assign]
    dash._loop(wait)
    return painted


def test_a_flood_draws_once_per_refresh_tick_and_no_more() -> None:
    source, clock = Source(), FakeClock()
    dash, _ = dashboard(source, clock, hz=2.0)
    painted = _minute(dash, clock, lambda: source.change(event_count=source.state.event_count + 30))
    assert len(painted) <= 60 * 2 + 1
    assert len(painted) >= 60 * 2 - 1 and all(p.startswith("full@") for p in painted)
    times = [float(p.split("@")[1]) for p in painted]
    assert min(b - a for a, b in pairwise(times)) >= 0.5 - 0.03  # late by a wake-up at most


def test_idle_draws_the_header_once_a_second_and_a_key_at_once() -> None:
    source, clock = Source(), FakeClock()
    dash, terminal = dashboard(source, clock, hz=4.0)
    painted = _minute(dash, clock, lambda: None, keys_at=30.0)
    full = [p for p in painted if p.startswith("full@")]
    header = [p for p in painted if p.startswith("header@")]
    assert 58 <= len(header) <= 61 and len(painted) == len(full) + len(header)
    assert len(full) <= 4  # the first draw, the rates becoming measurable, the key
    key = [p for p in full if p.endswith("*")]
    assert len(key) == 1 and 30.0 <= float(key[0][5:-1]) < 30.05  # drawn when pressed, not at the next tick
    assert "╭─ Teacher" in "\n".join(terminal.rows())
