"""The Events view (the log, windowed, filtered, level-coloured) and the Configuration view.

Only the rows that fit are turned into renderables: a 5,000-event log costs a slice per frame, and a
filter one pass of substring tests. Config values are redacted by key name as well as by content, so a
planted ``api_key: ...`` shows as ``[REDACTED:...]`` whatever its value looks like.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from heidi_engine.bus.redaction import default_redactor
from heidi_engine.ui.panels import Frame
from heidi_engine.ui.panels_text import LEVEL_STYLES, clock_of, safe
from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

Record = Mapping[str, object]
_WIDE_LOG = 110
_CONFIG_COLUMN_W = 40


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
    """True when ``needle`` (lowercase) occurs in the event's stage, level, type, message or error."""
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
    return Window(tuple(picked[start:end]), start + 1 if end > start else 0, total, scroll)


def events_rows(height: int | None) -> int:
    """Log rows the Events view shows in a body of ``height`` rows (the panel's border takes two)."""
    return 30 if height is None else max(1, height - 2)


def event_line(event: Record, width: int) -> Text:
    """One log line: time, level (coloured), round, stage, [type,] message and error."""
    level = str(event.get("level", ""))
    line = Text(clock_of(event.get("ts", "")), style="dim")
    line.append(f" {safe(level, 7).upper():<7}", style=LEVEL_STYLES.get(level, ""))
    line.append(f" r{event.get('round', '?')!s:<3}", style="dim")
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


def render_events(frame: Frame, width: int, height: int | None) -> RenderableType:
    """The log window with its position, the filter in force, and whether it follows new events."""
    log = log_of(frame)
    needle = frame.cursor.filter
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
        body: RenderableType = Group(*(event_line(e, width - 4) for e in window.rows))
    else:
        body = Text("no event matches the filter" if needle else "no events yet", style="dim")
    return Panel(body, title=title, title_align="left", border_style="blue")


def config_items(config: Mapping[str, object]) -> list[tuple[str, str]]:
    """``(key, value)`` pairs for display, redacted by key name and by content."""
    redacted = default_redactor().redact_obj(dict(config))
    assert isinstance(redacted, dict)
    items = []
    for key, value in redacted.items():
        if value is None:
            shown = "(empty)"
        elif isinstance(value, str):
            shown = value
        else:
            shown = json.dumps(value, default=str)
        items.append((safe(key, 60), safe(shown, 200)))
    return items


def render_config(frame: Frame, width: int, height: int | None) -> RenderableType:
    """The run's effective configuration, in as many key/value column pairs as the screen needs."""
    items = config_items(frame.state.config or {})
    note = Text(
        "Secrets come from environment variables and are never shown: they appear as [REDACTED].",
        style="dim",
        no_wrap=True,
        overflow="ellipsis",
    )
    if not items:
        body: RenderableType = Text("no configuration yet: no run has started", style="dim")
        return Panel(Group(body, note), title="Configuration", title_align="left", border_style="blue")
    rows = len(items) if height is None else max(1, height - 3)
    pairs = max(1, min(math.ceil(len(items) / rows), width // _CONFIG_COLUMN_W))
    rows = math.ceil(len(items) / pairs) if height is None else rows
    shown = items[: rows * pairs]
    table = Table.grid(padding=(0, 1), expand=True)
    for _ in range(pairs):
        table.add_column(style="cyan", no_wrap=True, overflow="ellipsis")
        table.add_column(no_wrap=True, overflow="ellipsis", ratio=1)
    for row in range(min(rows, len(shown))):
        cells: list[str] = []
        for column in range(pairs):
            index = column * rows + row
            cells += list(shown[index]) if index < len(shown) else ["", ""]
        table.add_row(*cells)
    parts: list[RenderableType] = [table]
    if len(shown) < len(items):
        parts.append(Text(f"… {len(items) - len(shown)} more: enlarge the terminal", style="yellow"))
    parts.append(note)
    return Panel(Group(*parts), title="Configuration", title_align="left", border_style="blue")
