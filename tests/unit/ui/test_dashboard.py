"""The dashboard app's logic without a terminal: key parsing, key handling, rates, scroll anchoring."""

from __future__ import annotations

import io
from datetime import datetime, timezone
from typing import Any

import pytest
from rich.console import Console

from heidi_engine.bus.state import RunState
from heidi_engine.ui.dashboard.app import Dashboard, Feed, RateMeter, UiState, handle_key
from heidi_engine.ui.dashboard.frame import Cursor, Link
from heidi_engine.ui.dashboard.keys import KeyParser

RUN_ID = "run_20240215_123456_deadbeef"


def test_key_parser_names_arrows_pages_home_end_and_text() -> None:
    parser = KeyParser()
    data = b"q1?/ab\x1b[A\x1b[B\x1bOA\x1b[5~\x1b[6~\x1b[H\x1b[F\x1b[1~\x1b[4~\r\x7f"
    assert parser.feed(data) == [
        "q",
        "1",
        "?",
        "/",
        "a",
        "b",
        "up",
        "down",
        "up",
        "pgup",
        "pgdn",
        "home",
        "end",
        "home",
        "end",
        "enter",
        "backspace",
    ]
    assert not parser.pending


def test_key_parser_completes_a_sequence_split_across_reads() -> None:
    parser = KeyParser()
    assert parser.feed(b"x\x1b[") == ["x"]
    assert parser.pending
    assert parser.feed(b"6") == []
    assert parser.feed(b"~k") == ["pgdn", "k"]


def test_a_lone_escape_is_a_key_once_nothing_follows() -> None:
    parser = KeyParser()
    assert parser.feed(b"\x1b") == []
    assert parser.flush() == ["esc"]
    assert parser.feed(b"\x1b/") == ["esc", "/"]  # ESC then another key in one read
    assert parser.feed(b"\x1b[99;5Zq") == ["q"]  # an unknown sequence is swallowed whole
    assert parser.feed("é".encode()[:1]) == []  # half a UTF-8 character waits for the rest
    assert parser.feed("é".encode()[1:]) == ["é"]


def test_keys_switch_views_toggle_help_and_quit() -> None:
    ui = UiState()
    for key, view in (("3", 3), ("5", 5), ("1", 1)):
        handle_key(ui, key, 10)
        assert ui.view == view
    handle_key(ui, "?", 10)
    assert ui.help
    handle_key(ui, "2", 10)
    assert ui.view == 2 and not ui.help
    handle_key(ui, "?", 10)
    handle_key(ui, "esc", 10)
    assert not ui.help
    handle_key(ui, "r", 10)
    assert ui.refresh and not ui.quit
    handle_key(ui, "q", 10)
    assert ui.quit


def test_scroll_keys_act_only_in_the_event_view() -> None:
    ui = UiState()
    handle_key(ui, "k", 10)
    assert ui.cursor.scroll == 0
    ui.view = 4
    for key, scroll in (("k", 1), ("up", 2), ("pgup", 12), ("j", 11), ("down", 10), ("pgdn", 0), ("pgdn", 0)):
        handle_key(ui, key, 10)
        assert ui.cursor.scroll == scroll, key
    handle_key(ui, "g", 10)
    assert ui.cursor.scroll > 1000  # clamped to the oldest page by the app, which knows the log
    handle_key(ui, "G", 10)
    assert ui.cursor.scroll == 0
    handle_key(ui, "home", 10)
    handle_key(ui, "end", 10)
    assert ui.cursor.scroll == 0


def test_filter_prompt_types_applies_and_cancels() -> None:
    ui = UiState(view=1)
    handle_key(ui, "/", 10)
    assert ui.view == 4 and ui.cursor.prompt == ""
    for key in ("q", "x", "backspace", "1", " "):  # q is text here, not quit
        handle_key(ui, key, 10)
    assert ui.cursor.prompt == "q1 " and not ui.quit
    handle_key(ui, "enter", 10)
    assert ui.cursor == Cursor(scroll=0, filter="q1", prompt=None)
    handle_key(ui, "/", 10)
    assert ui.cursor.prompt == ""  # a new filter: typing does not append to the one in force
    handle_key(ui, "z", 10)
    handle_key(ui, "esc", 10)
    assert ui.cursor.filter == "q1" and ui.cursor.prompt is None
    handle_key(ui, "/", 10)
    handle_key(ui, "enter", 10)
    assert ui.cursor.filter == ""


def _state(
    run_id: str = RUN_ID, requests: int = 0, tokens: int = 0, generated: int = 0, step: int = 0
) -> RunState:
    state = RunState(run_id=run_id)
    state.usage.update({"requests_sent": requests, "input_tokens": tokens, "output_tokens": tokens // 2})
    state.counters["teacher_generated"] = generated
    state.trainer.step = step
    return state


def test_rate_meter_measures_deltas_over_time() -> None:
    meter = RateMeter(window_s=5.0, min_span_s=0.5)
    assert meter.update(0.0, _state()).requests_s is None  # one sample is no rate
    assert meter.update(0.25, _state(requests=1)).requests_s is None  # too short a span
    rates = meter.update(2.0, _state(requests=10, tokens=1000, generated=8, step=4))
    assert rates.requests_s == pytest.approx(5.0)
    assert rates.input_tokens_s == pytest.approx(500.0)
    assert rates.output_tokens_s == pytest.approx(250.0)
    assert rates.generated_s == pytest.approx(4.0)
    assert rates.train_steps_s == pytest.approx(2.0)
    # Older samples leave the window: the rate follows the recent pace.
    for t in range(3, 12):
        rates = meter.update(float(t), _state(requests=10 + (t - 2) * 100))
    assert rates.requests_s == pytest.approx(100.0)


def test_rate_meter_restarts_on_a_new_run_or_a_count_going_back() -> None:
    meter = RateMeter(min_span_s=0.5)
    meter.update(0.0, _state(requests=100))
    meter.update(1.0, _state(requests=200))
    assert meter.update(2.0, _state(run_id="run_20240215_123457_deadbeef", requests=5)).requests_s is None
    meter.update(3.0, _state(run_id="run_20240215_123457_deadbeef", requests=50, step=40))
    assert (
        meter.update(4.0, _state(run_id="run_20240215_123457_deadbeef", requests=60, step=2)).requests_s
        is None
    )


class FakeSource:
    """A source whose feed the test sets; counts refreshes."""

    def __init__(self) -> None:
        self.state = RunState(run_id=RUN_ID, status="running")
        self.events: tuple[dict[str, Any], ...] = ()
        self.refreshes = 0
        self.closed = False

    def add_events(self, count: int) -> None:
        start = len(self.events)
        new = tuple(
            {
                "ts": "2024-02-15T12:35:00.000Z",
                "round": 1,
                "stage": "generate",
                "level": "info",
                "event_type": "progress",
                "message": f"item {i}",
            }
            for i in range(start, start + count)
        )
        self.events += new
        self.state.event_count += count

    def read(self) -> Feed:
        link = Link("live", True, 0.1, None, self.state.event_count)
        return Feed(self.state, link, self.events, (self.state.event_count,))

    def refresh(self) -> None:
        self.refreshes += 1

    def close(self) -> None:
        self.closed = True


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _dashboard(source: FakeSource, clock: Clock, height: int = 30) -> Dashboard:
    console = Console(width=100, height=height, file=io.StringIO(), color_system=None)
    wall = datetime(2024, 2, 15, 12, 40, tzinfo=timezone.utc)
    return Dashboard(source, console, view=4, clock=clock, wall=lambda: wall)


def _scrolled_back() -> tuple[FakeSource, Clock, Dashboard, int]:
    """A dashboard on 100 events, scrolled back one page (the page's height returned)."""
    source, clock = FakeSource(), Clock()
    source.add_events(100)
    dash = _dashboard(source, clock)
    dash.tick()
    dash.key("pgup")
    page = dash._page()
    assert dash.frame().cursor.scroll == page
    return source, clock, dash, page


def test_scrolled_back_log_stays_put_while_new_events_arrive() -> None:
    source, clock, dash, page = _scrolled_back()
    source.add_events(7)
    clock.now += 0.25
    dash.tick()
    assert dash.frame().cursor.scroll == page + 7  # the same rows are shown
    dash.key("G")
    source.add_events(3)
    dash.tick()
    assert dash.frame().cursor.scroll == 0  # following the tail


def test_a_scrolled_back_log_counts_rows_not_events_when_the_feed_left_some_out() -> None:
    source, clock, dash, page = _scrolled_back()
    # 500 events arrived, the feed carried 4 of them and one row stands for the 496 left out
    source.events += ({"left_out": 496, "before": 100, "front": False, "note": None},)
    source.add_events(4)
    source.state.event_count += 496
    # and a page of older events was loaded above: it adds no row below
    source.events = tuple({**e, "message": f"old {i}"} for i, e in enumerate(source.events[:3])) + source.events
    clock.now += 0.25
    dash.tick()
    assert dash.frame().cursor.scroll == page + 5  # the same rows are shown


def test_home_clamps_to_the_oldest_page_so_down_acts_at_once() -> None:
    source, clock = FakeSource(), Clock()
    source.add_events(50)
    dash = _dashboard(source, clock)
    dash.key("g")
    top = 50 - dash._page()
    assert dash.frame().cursor.scroll == top
    dash.key("j")
    assert dash.frame().cursor.scroll == top - 1


def test_refresh_key_rereads_the_source_and_views_build_frames() -> None:
    source, clock = FakeSource(), Clock()
    dash = _dashboard(source, clock)
    dash.key("r")
    assert source.refreshes == 1
    for key in "12345":
        dash.key(key)
        assert dash.frame().view == int(key)
    with pytest.raises(ValueError, match="view must be 1-6"):
        Dashboard(source, Console(file=io.StringIO()), view=0)
