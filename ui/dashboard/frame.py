"""The frozen input of one dashboard screen: data only, the ground floor every view and the screen build on.

A frame holds everything one screen shows: a state copy the views never mutate, the link's health, the
live event log, the rates the app measured between snapshots, and the UI's own state (view, scroll,
filter, help).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from rich.text import Text

from heidi_engine.bus.state import RunState

__all__ = ["NOT_RUNNING", "VIEWS", "Cursor", "Frame", "Link", "Rates", "View"]

VIEWS: tuple[str, ...] = ("Overview", "Teacher", "Trainer", "Events", "Configuration", "Eval")
# The live link's ``down`` values that mean no supervisor process runs: the newest run's files are shown.
NOT_RUNNING: frozenset[str | None] = frozenset({"shut down", "exited", "absent"})


@dataclass(frozen=True)
class Rates:
    """Per-second rates the app measured from deltas between snapshots; ``None`` until measurable."""

    requests_s: float | None = None
    input_tokens_s: float | None = None
    output_tokens_s: float | None = None
    generated_s: float | None = None
    train_steps_s: float | None = None
    events_s: float | None = None


@dataclass(frozen=True)
class Link:
    """Where the state comes from and how healthy that source is."""

    mode: Literal["live", "replay"] = "live"
    connected: bool = False
    silence_s: float | None = None
    error: str | None = None
    seq: int = -1
    source: str = ""
    # Why a live link is down: "shut down" (cleanly: its connection file is gone), "exited" (its process
    # is gone, file left behind: killed or crashed), "absent" (no connection file since this viewer
    # started), "silent" (alive but not answering), "connecting". While none runs (NOT_RUNNING),
    # ``source`` names the run whose files are shown ("" for a home with no run) and ``home`` the home.
    down: str | None = None
    home: str = ""


@dataclass(frozen=True)
class Cursor:
    """The event view's scroll and filter: ``scroll`` rows up from the newest (0 follows the tail)."""

    scroll: int = 0
    filter: str = ""
    prompt: str | None = None
    detail: bool = False  # the newest event in the window shown in full below the log
    offset: int = 0  # the other views: rows scrolled down from the top when they do not fit


@dataclass(frozen=True)
class Frame:
    """One screen's worth of input. ``now`` is wall-clock time, for the run's elapsed time; a view that
    shows it too must say when in :func:`~heidi_engine.ui.dashboard.screen.body_shows_clock`, since a
    new second alone redraws only the header."""

    state: RunState
    link: Link
    now: datetime
    view: int = 1
    events: tuple[Mapping[str, object], ...] = ()
    rates: Rates = field(default_factory=Rates)
    cursor: Cursor = field(default_factory=Cursor)
    help: bool = False
    notice: str | None = None  # the run controls' question or outcome, shown in the footer


# A view: the frame, the width and (when the terminal gives one) the height, to the view's lines.
View = Callable[[Frame, int, "int | None"], list[Text]]
