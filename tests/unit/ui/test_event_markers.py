"""The Events view and a live log's markers: what they say, that filters keep them, and that a marker
in view asks for its events only once the user scrolled (or the log's top shows)."""

from __future__ import annotations

from heidi_engine.ui.dashboard.views.events import detail_lines, event_line, event_window
from heidi_engine.ui.viewer import EventLog, is_marker


def _log(asked: list[dict[str, object]]) -> EventLog:
    events: list[dict[str, object]] = [{"left_out": 1234, "before": 1235, "front": True, "note": None}]
    for n in range(100):
        events.append({"ts": "2024-01-01T00:00:00.000Z", "level": "info", "stage": "generate",
                       "event_type": "progress", "message": f"event {n}", "round": 1})
        if n == 50:
            events.append({"left_out": 800, "before": 2086, "front": False, "note": None})
    log = EventLog(events)
    log.loader = asked.append
    return log


def test_markers_say_what_they_stand_for() -> None:
    assert event_line({"left_out": 1234, "before": 1235, "front": True, "note": None}, 120).plain == (
        "⋯ 1,234 older events (loaded when scrolled to)")
    assert event_line({"left_out": 1, "before": 9, "front": False, "note": None}, 120).plain == (
        "⋯ 1 event the live feed left out (loaded when scrolled to)")
    gone = {"left_out": 5, "before": 9, "front": False, "note": "no longer in the files"}
    assert event_line(gone, 120).plain == "⋯ 5 events the live feed left out: no longer in the files"
    assert "no longer in the files" in detail_lines(gone, 80)[0].plain


def test_a_marker_in_view_asks_for_its_events_once_scrolled() -> None:
    asked: list[dict[str, object]] = []
    log = _log(asked)
    event_window(log, "", 0, 20)  # following the newest: nothing is asked
    assert asked == []
    event_window(log, "", 45, 20)  # scrolled onto the hole
    assert [m["before"] for m in asked] == [2086]
    event_window(log, "", 1 << 30, 20)  # Home: the top, with the older events' marker
    assert [m["before"] for m in asked] == [2086, 1235]
    window = event_window(log, "event 77", 1 << 30, 20)  # a filter keeps the markers
    assert sum(1 for row in window.rows if is_marker(row)) == 2 and window.matches == 3
    assert len(asked) == 4  # both again (the view's thread asks the supervisor once for each)
    event_window(tuple(log), "", 1 << 30, 20)  # a plain tuple (files, a replay) asks nothing
    noted = EventLog([{"left_out": 3, "before": 4, "front": True, "note": "cannot load them: refused"}])
    noted.loader = asked.append
    event_window(noted, "", 0, 20)  # a marker whose events cannot be had asks nothing
    assert len(asked) == 4
