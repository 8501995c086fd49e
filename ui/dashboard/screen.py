"""The dashboard's screen as pure functions: a frozen :class:`~heidi_engine.ui.dashboard.frame.Frame` in,
a Rich renderable out. :func:`render` lays out a header, the selected view and a footer, fitted to ``height``
rows when a terminal is given one, or at natural height for ``--once`` and tests. Nothing here reads a
clock, a socket or a file, so every screen is reproducible from its frame.
"""

from __future__ import annotations

from datetime import datetime

from rich.console import RenderableType
from rich.text import Text

from heidi_engine.bus.isolation import sandbox_warning
from heidi_engine.bus.state import ACTIVE_STATUSES, RESUMABLE_STATUSES, RunState
from heidi_engine.ui.dashboard.frame import NOT_RUNNING, VIEWS, Frame, Link, View
from heidi_engine.ui.dashboard.views.config import render_config
from heidi_engine.ui.dashboard.views.eval import render_eval
from heidi_engine.ui.dashboard.views.events import render_events
from heidi_engine.ui.dashboard.views.overview import render_overview
from heidi_engine.ui.dashboard.views.teacher import render_teacher
from heidi_engine.ui.dashboard.views.trainer import render_trainer
from heidi_engine.ui.text import STATUS_STYLES, box, cell, fit, fmt_duration, outage_since, parse_ts, safe

HEADER_ROWS = 3
FOOTER_ROWS = 1


def elapsed_s(state: RunState, now: datetime) -> float | None:
    """Seconds since the run started: up to ``now`` while active, up to its last update once finished
    (fixed: the duration ``--list`` shows; unknown rather than running when no update is known)."""
    started = parse_ts(state.started_at)
    if started is None:
        return None
    end = now if state.status in ACTIVE_STATUSES else parse_ts(state.updated_at) or parse_ts(state.last_event_ts)
    return None if end is None else max(0.0, (end - started).total_seconds())


def _link_text(link: Link) -> Text:
    if link.mode == "replay":
        text = Text("◆ replay", style="bold blue")
        text.append(f" of {safe(link.source, 120)} (files; no supervisor)", style="blue")
        return text
    if link.connected:
        text = Text("● live", style="bold green")
        text.append(f" · seq {link.seq:,}", style="dim")
        return text
    if link.down in NOT_RUNNING:
        text = Text("■ supervisor not running", style="bold magenta")
        text.append({"shut down": " (shut down)", "exited": " (its process exited)"}.get(link.down or "", ""),
                    style="magenta")
        text.append(f" · {safe(link.source, 60)} from its files" if link.source else " · waiting for one",
                    style="dim")
        return text
    if link.down == "connecting":
        return Text("… connecting to the supervisor", style="bold yellow")
    text = Text("✖ supervisor not reachable", style="bold red")
    if link.down == "exited":
        text.append(" (its process exited)", style="red")
    if link.silence_s is not None:
        text.append(f" · last heard {link.silence_s:.0f} s ago", style="red")
    else:
        text.append(" · never heard", style="red")
    text.append(" · retrying", style="dim")
    return text


def _spread(left: Text, right: Text, width: int) -> Text:
    """``left`` and ``right`` on one row of ``width`` cells, ``right`` flush right (``left`` cut first)."""
    right_w = min(right.cell_len, width)
    row = fit(left, width - right_w)
    row.append_text(fit(right, right_w))
    return row


def render_header(frame: Frame, width: int) -> list[Text]:
    """Three rows: run identity and elapsed time; round, stage, flags and link; the view tabs."""
    state = frame.state
    ident = Text("AutoTrain ", style="bold")
    # A state built by hand or a faulty patch may lack a status; show that rather than fail.
    status = str(state.status or "unknown")
    badge = safe(status, 20).upper()
    link = frame.link
    if link.mode == "live" and not link.connected and state.status in ACTIVE_STATUSES:
        # The last status heard is not the present one: say what is known instead.
        badge, status = ("SUPERVISOR DOWN", "failed") if link.down in ("shut down", "exited") else ("UNKNOWN", "idle")
    tail = Text(f" {badge} ", style="reverse " + STATUS_STYLES.get(status, ""))
    if state.http_error and link.mode == "live":
        tail.append("  HTTP down", style="bold red")
    duration = fmt_duration(elapsed_s(state, frame.now))
    elapsed = Text(f"elapsed {duration}" if width >= 70 else duration, style="bold")
    # On a narrow screen the run id gives way before the status badge and the elapsed time.
    room = max(8, min(40, width - ident.cell_len - tail.cell_len - elapsed.cell_len - 3))
    ident.append(safe(state.run_id or "no run yet", room), style="bold cyan" if state.run_id else "dim")
    ident.append("  ")
    ident.append_text(tail)

    where = Text()
    total = str(state.total_rounds) if state.total_rounds else "?"
    where.append(f"round {state.current_round}/{total}", style="bold")
    where.append(" · stage ", style="dim")
    where.append(safe(state.current_stage or "–", 20), style="bold")
    if state.pause_requested:
        where.append("  ⏸ pause requested", style="bold yellow")
    if state.stop_requested:
        where.append("  ■ stop requested", style="bold magenta")
    if state.problem:
        where.append(f"  ⚠ {safe(state.problem, 160)}", style="bold red")
    if state.teacher_outage is not None:
        where.append(f"  ⚠ teacher unreachable since {outage_since(state.teacher_outage, frame.now)}", style="bold red")
    if sandbox_warning(state.config):
        where.append("  ⚠ SANDBOX none: generated code unconfined", style="bold red")

    tabs = Text()
    names = VIEWS if width >= 90 else tuple("Config" if name == "Configuration" else name for name in VIEWS)
    for number, name in enumerate(names, 1):
        style = "bold reverse" if number == frame.view and not frame.help else "dim"
        tabs.append(f" {number} {name} ", style=style)
        tabs.append(" ")
    helper = Text("? help", style="bold reverse" if frame.help else "dim")
    return [
        _spread(ident, elapsed, width),
        _spread(where, _link_text(frame.link), width),
        _spread(tabs, helper, width),
    ]


def render_footer(frame: Frame, width: int) -> Text:
    """The key hints, the open filter prompt, or why the supervisor cannot be reached."""
    if frame.cursor.prompt is not None:
        text = Text("filter / ", style="bold yellow")
        text.append(safe(frame.cursor.prompt, 100))
        text.append("█", style="blink")
        text.append("   Enter apply · Esc cancel", style="dim")
        if frame.cursor.filter:
            text.append(f" · in force: {safe(frame.cursor.filter, 40)}", style="dim")
    elif frame.notice is not None:
        text = Text(safe(frame.notice, 200), style="bold yellow")
    elif frame.link.mode == "live" and frame.link.down in NOT_RUNNING and not frame.state.run_id:
        text = Text(f"no run in {safe(frame.link.home or 'this home', 120)} yet; ", style="yellow")
        text.append("autotrain-menu --start starts one", style="bold")
        text.append(" · q quit · ? help", style="dim")
    elif frame.link.mode == "live" and frame.link.down in NOT_RUNNING and frame.link.error:
        text = Text(safe(frame.link.error, 200), style="red")
    elif frame.link.mode == "live" and not frame.link.connected and frame.link.error:
        text = Text("not reachable: ", style="red")
        text.append(safe(frame.link.error, 160), style="red")
    elif frame.link.mode == "live" and frame.state.http_error:
        text = Text(safe(frame.state.http_error, 200), style="red")
    elif frame.state.status in RESUMABLE_STATUSES and frame.state.run_id and not frame.help:
        text = Text(f"run {frame.state.status}: ", style="yellow")
        text.append(f"autotrain-menu --resume-run {safe(frame.state.run_id, 40)} continues it", style="bold")
        text.append(" · q quit · ? help", style="dim")
    elif frame.link.mode == "live" and frame.link.down in NOT_RUNNING and not frame.help:
        text = Text(f"run {safe(str(frame.state.status), 20)}, as its files tell it; ", style="dim")
        text.append("autotrain-menu --start starts another · q quit · ? help", style="dim")
    else:
        hints = "q quit · r refresh · 1-6 Tab views · ? help"
        if frame.link.mode == "live":
            hints += " · p pause · u unpause · s stop"
        if frame.view == 4 and not frame.help:
            hints += " · ↑↓/j k scroll · Enter full event · / filter · PgUp PgDn · g/G Home/End"
        text = Text(hints, style="dim")
    return fit(text, width)


HELP_KEYS: tuple[tuple[str, str], ...] = (
    ("q", "quit (the terminal is restored)"),
    ("r", "refresh now (re-reads the files of a replayed run)"),
    ("1 … 6", "Overview · Teacher · Trainer · Events · Configuration · Eval"),
    ("?", "show or hide this help (Esc hides it too)"),
    ("↑ ↓  k j", "scroll one line (the event log; any other view that does not fit)"),
    ("PgUp PgDn", "scroll one page"),
    ("Home End  g G", "top · bottom (Events: oldest · newest; End follows new events)"),
    ("Enter", "Events: the newest event in view in full, wrapped (Enter or Esc closes)"),
    ("/", "Events: filter by stage, level or message text; Enter applies, Esc cancels, empty clears"),
    ("Tab ← →", "next · previous view (Shift+Tab: previous)"),
    ("p u", "pause the run at its next safe boundary · unpause it (live only)"),
    ("s", "stop the run at its next stage boundary, after a y/n confirmation (live only; a run that is "
          "not active is refused at once, saying why)"),
)


def render_help(_frame: Frame, width: int, height: int | None) -> list[Text]:
    """The key reference."""
    lines = []
    for keys, what in HELP_KEYS:
        row = cell(keys, 15, style="bold cyan")
        row.append(what)
        lines.append(row)
    lines.append(Text())
    lines.append(Text("A replayed run cannot be controlled; autotrain-menu has every other command.", style="dim"))
    return box(Text("Help", style="bold"), lines, width, height)




_VIEW_RENDERERS: dict[int, View] = {
    1: render_overview, 2: render_teacher, 3: render_trainer, 4: render_events, 5: render_config, 6: render_eval,
}


def body_rows(height: int) -> int:
    """Rows left for a view under the header and above the footer on a ``height``-row screen."""
    return max(1, height - HEADER_ROWS - FOOTER_ROWS)


def _natural(frame: Frame, width: int, rows: int, sized: list[Text]) -> list[Text] | None:
    """A view's full height when it does not fit in ``rows`` (so it scrolls), else ``None``.

    The Events view windows its log itself. The Overview gives its recent events whatever room is
    left, so it scrolls only when its counters and status alone do not fit.
    """
    if frame.view == 4 and not frame.help:
        return None
    draw = render_help if frame.help else _VIEW_RENDERERS[frame.view]
    if frame.view == 1 and not frame.help and len(sized) <= rows:
        return None
    natural = draw(frame, width, None)
    return natural if len(natural) > rows else None


def view_overflow(frame: Frame, width: int, height: int) -> int:
    """How far the current view can scroll down on a ``width`` × ``height`` screen (0: it fits)."""
    rows = body_rows(height)
    draw = render_help if frame.help else _VIEW_RENDERERS[frame.view]
    natural = _natural(frame, width, rows, draw(frame, width, rows))
    return 0 if natural is None else len(natural) - (rows - 1)


def _scrolled(natural: list[Text], offset: int, rows: int) -> list[Text]:
    """``rows - 1`` rows of ``natural`` from ``offset`` (clamped), then where they are and how to move."""
    page = max(1, rows - 1)
    offset = min(max(0, offset), len(natural) - page)
    window = natural[offset : offset + page]
    below = len(natural) - offset - page
    note = Text(f"rows {offset + 1}–{offset + page} of {len(natural)}", style="yellow")
    note.append(f" · {'↓ ' + str(below) + ' more · ' if below else ''}↑↓ j k PgUp PgDn g G scroll", style="dim")
    return [*window, note]


def render_rows(frame: Frame, width: int, height: int | None = None) -> list[Text]:
    """The screen's rows for ``frame``: exactly ``height`` when given, natural height otherwise.

    Every row is a ``Text`` fitted to ``width``: plain rows render several times faster than nested
    tables and panels, which matters at every refresh under a flood of events, and a painter can tell
    row by row what changed.
    """
    if frame.view not in range(1, len(VIEWS) + 1):
        raise ValueError(f"view must be 1-{len(VIEWS)}, got {frame.view}")
    width = max(20, width)
    rows = None if height is None else body_rows(height)
    draw = render_help if frame.help else _VIEW_RENDERERS[frame.view]
    body = draw(frame, width, rows)
    if rows is not None:
        natural = _natural(frame, width, rows, body)
        if natural is not None:
            body = _scrolled(natural, frame.cursor.offset, rows)
        body = body[:rows] + [Text()] * max(0, rows - len(body))
    lines = [*render_header(frame, width), *body, render_footer(frame, width)]
    return lines if height is None else lines[:height]


def header_rows(frame: Frame, width: int, height: int) -> list[Text]:
    """The first rows of :func:`render_rows` alone: what a new second changes when the data did not."""
    return render_header(frame, max(20, width))[:height]


def body_shows_clock(frame: Frame) -> bool:
    """Whether rows below the header show the wall clock too (a parked teacher's outage and next probe
    count on), so that a new second redraws them as well."""
    return frame.state.teacher_outage is not None and not frame.help and frame.view in (1, 2)


def render(frame: Frame, width: int, height: int | None = None) -> RenderableType:
    """The whole screen for ``frame`` as one renderable (``--once``, tests): :func:`render_rows` joined."""
    screen = Text("\n", no_wrap=True, overflow="crop").join(render_rows(frame, width, height))
    screen.no_wrap, screen.overflow = True, "crop"
    return screen
