"""The Events view (the log, windowed, filtered, level-coloured) and the Configuration view.

Only the rows that fit are turned into renderables: a 5,000-event log costs a slice per frame, and a
filter one pass of substring tests. A live log has markers (:func:`~heidi_engine.ui.viewer.is_marker`)
where it holds fewer events than the run has: the events older than its first, and those the live feed
left out under a flood. Once the user has scrolled (or the log's top is in view), a marker in the window
asks its log to load what it stands for, a page at a time (:meth:`~heidi_engine.ui.viewer.EventLog.want`).
Config values are redacted by key name as well as by content, so a planted ``api_key: ...`` shows as
``[REDACTED:...]`` whatever its value looks like.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from rich.text import Text

from heidi_engine.ui.dashboard.frame import Frame
from heidi_engine.ui.text import LEVEL_STYLES, box, clock_of, safe
from heidi_engine.ui.viewer import EventLog, is_marker

Record = Mapping[str, object]
_WIDE_LOG = 110


@dataclass(frozen=True)
class Window:
    """The visible slice of the (filtered) log: ``first`` is the 1-based position of ``rows[0]``."""

    rows: tuple[Record, ...]
    first: int
    matches: int
    scroll: int


def log_of(frame: Frame) -> Sequence[Record]:
    """The frame's event log: the live log, else the snapshot's recent events."""
    return frame.events or frame.state.recent_events


def matches(event: Record, needle: str) -> bool:
    """True when ``needle`` (lowercase) occurs in the event's stage, level, type, message or error; a
    marker always matches (the events it stands for might)."""
    if is_marker(event):
        return True
    for key in ("message", "stage", "level", "event_type", "error"):
        value = event.get(key)
        if isinstance(value, str) and needle in value.lower():
            return True
    return False


def event_window(events: Sequence[Record], needle: str, scroll: int, rows: int) -> Window:
    """The ``rows`` events ending ``scroll`` rows above the newest match of ``needle`` ("" matches all)."""
    needle = needle.lower()
    picked = [e for e in events if matches(e, needle)] if needle else events
    rows = max(1, rows)
    total = len(picked)
    scroll = min(max(0, scroll), max(0, total - rows))
    end = total - scroll
    start = max(0, end - rows)
    window = Window(tuple(picked[start:end]), start + 1 if end > start else 0, total, scroll)
    if isinstance(events, EventLog) and (scroll or start == 0):
        # Scrolled back to (or showing) events the log does not hold: load them.
        for row in window.rows:
            if is_marker(row):
                events.want(row)
    return window


def events_rows(height: int | None) -> int:
    """Log rows the Events view shows in a body of ``height`` rows (the panel's border takes two)."""
    return 30 if height is None else max(1, height - 2)


def marker_text(marker: Record) -> str:
    """What a marker says: how many events it stands for, and whether (or why not) they can be loaded."""
    count = marker.get("left_out")
    shown = f"{count:,}" if isinstance(count, int) else "some"
    what = f"{shown} older event{'s' if count != 1 else ''}" if marker.get("front") else (
        f"{shown} event{'s' if count != 1 else ''} the live feed left out")
    note = marker.get("note")
    return f"⋯ {what}: {safe(note, 200)}" if note else f"⋯ {what} (loaded when scrolled to)"


def event_line(event: Record, width: int) -> Text:
    """One log line: time, level (coloured), round, stage, [type,] message and error."""
    if is_marker(event):
        line = Text(marker_text(event), style="yellow dim")
        line.no_wrap, line.overflow = True, "ellipsis"
        return line
    level = str(event.get("level", ""))
    line = Text(clock_of(event.get("ts", "")), style="dim")
    line.append(f" {safe(level, 7).upper():<7}", style=LEVEL_STYLES.get(level, ""))
    line.append(f" r{safe(event.get('round', '?'), 6):<3}", style="dim")
    line.append(f" {safe(event.get('stage', ''), 11):<11}", style="bold")
    if width >= _WIDE_LOG:
        line.append(f" {safe(event.get('event_type', ''), 17):<17}", style="dim")
    line.append(" ")
    line.append(safe(event.get("message", ""), 500))
    error = event.get("error")
    if error:
        line.append(f" — {safe(error, 200)}", style="red")
    line.no_wrap, line.overflow = True, "ellipsis"
    return line


def _wrapped(text: str, width: int, style: str = "") -> list[Text]:
    width = max(10, width)
    out: list[Text] = []
    for paragraph in text.splitlines() or [""]:
        while len(paragraph) > width:
            out.append(Text(paragraph[:width], style=style))
            paragraph = paragraph[width:]
        out.append(Text(paragraph, style=style))
    return out


def detail_lines(event: Record, width: int) -> list[Text]:
    """One event in full: its fields on a line, then the whole message and error, wrapped to ``width``."""
    if is_marker(event):
        return _wrapped(marker_text(event), width, "yellow")
    head = Text(safe(event.get("ts", ""), 40), style="dim")
    level = str(event.get("level", ""))
    head.append(f"  {safe(level, 7).upper()}", style=LEVEL_STYLES.get(level, ""))
    head.append(f"  round {safe(event.get('round', '?'), 6)} · {safe(event.get('stage', ''), 20)}", style="bold")
    head.append(f" · {safe(event.get('event_type', ''), 20)}", style="dim")
    lines = [head, *_wrapped(safe(event.get("message", ""), 500), width)]
    error = event.get("error")
    if error:
        lines += _wrapped(f"error: {safe(error, 200)}", width, "red")
    return lines


def render_events(frame: Frame, width: int, height: int | None) -> list[Text]:
    """The log window with its position, the filter in force, and whether it follows new events; with
    the detail pane open (Enter), the newest event in the window is shown in full below it."""
    log = log_of(frame)
    needle = frame.cursor.filter
    detail: list[Text] = []
    if frame.cursor.detail:
        probe = event_window(log, needle, frame.cursor.scroll, events_rows(height))
        if probe.rows:
            shown = detail_lines(probe.rows[-1], width - 4)
            room = len(shown) + 2 if height is None else min(len(shown) + 2, max(3, height // 2))
            title = Text("Event in full", style="bold")
            title.append(" · Enter or Esc closes", style="dim")
            detail = box(title, shown, width, room)
            height = None if height is None else max(3, height - len(detail))
    window = event_window(log, needle, frame.cursor.scroll, events_rows(height))
    title = Text("Events ", style="bold")
    if window.rows:
        last = window.first + len(window.rows) - 1
        title.append(f"{window.first:,}–{last:,} of {window.matches:,}")
    else:
        title.append(f"0 of {window.matches:,}")
    if needle:
        title.append(f" · filter “{safe(needle, 40)}” ({len(log):,} in log)", style="yellow")
    title.append(" · following" if window.scroll == 0 else " · scrolled (End follows)", style="dim")
    if window.rows:
        rows = [event_line(e, width - 4) for e in window.rows]
        if detail:
            rows[-1].stylize("reverse")
    else:
        rows = [Text("no event matches the filter" if needle else "no events yet", style="dim")]
    return box(title, rows, width, height) + detail
