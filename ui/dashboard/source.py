"""Where the dashboard's state comes from: a live supervisor, or a run's files when none runs.

:class:`LiveSource` follows the home's supervisor (its UI feed; the Events view loads older events, and
those the feed left out, a page at a time as the user scrolls to them) and, while none runs (its
connection file gone, or the pid in it gone), shows the home's newest run as its files tell it, the way
a replay does, and switches back to live as soon as a supervisor answers. :class:`ReplaySource` is one
named run's files (``autotrain-dash --run``). A run that a dead supervisor left active is shown
``interrupted`` (:func:`~heidi_engine.ui.status_view.orphaned`), never running.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from heidi_engine.bus.connection import BUS_ENV, ConnectionFileError, read_bus_info
from heidi_engine.bus.event import is_run_id
from heidi_engine.bus.journal import EVENTS_FILE, STATE_FILE, load_state_file, tail_records
from heidi_engine.bus.ledger import LEDGER_FILE, LedgerLost, replay
from heidi_engine.bus.state import RunState
from heidi_engine.ui.dashboard.frame import NOT_RUNNING, Link
from heidi_engine.ui.status_view import orphaned
from heidi_engine.ui.viewer import EVENT_LOG, LiveView

__all__ = ["Feed", "LiveSource", "ReplaySource", "Source", "newest_run", "replayed"]

Record = Mapping[str, object]
_PID_CHECK_S = 1.0
_FILES_CHECK_S = 1.0


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


def _supervisor_alive(home: Path) -> bool:
    """Whether the home's own connection file names a live process (a remote one counts as alive)."""
    try:
        info = read_bus_info(home)
    except ConnectionFileError:
        return False
    return info.remote or not _pid_gone(info.pid)


def newest_run(home: Path) -> Path | None:
    """The home's newest run folder (run ids sort by their start time), or ``None``."""
    root = home / "runs"
    with contextlib.suppress(OSError):
        names = [p.name for p in root.iterdir() if is_run_id(p.name) and p.is_dir()]
        return root / max(names) if names else None
    return None


def replayed(folder: Path) -> RunState:
    """The run rebuilt from its files (:func:`~heidi_engine.bus.ledger.replay`), with its last update
    from ``state.json`` (or its last event), so a finished run's elapsed time is fixed and the same as
    ``--list``'s duration."""
    state = replay(folder)
    saved = load_state_file(folder)
    state.updated_at = (saved.updated_at if saved is not None else None) or state.last_event_ts
    return state


def _files_key(folder: Path) -> tuple[object, ...]:
    """What changes when the run's files do (a new supervisor recovering it, a run writing them)."""
    key: list[object] = [folder.name]
    for name in (STATE_FILE, LEDGER_FILE, EVENTS_FILE):
        try:
            stat = (folder / name).stat()
            key.append((stat.st_mtime_ns, stat.st_size))
        except OSError:
            key.append(None)
    return tuple(key)


class _NewestRun:
    """The home's newest run as its files tell it, re-read when they change (at most once a second)."""

    def __init__(self, home: Path, clock: Callable[[], float]) -> None:
        self.home = home
        self._clock = clock
        self._checked_at: float | None = None
        self._key: tuple[object, ...] | None = None
        self._loads = 0
        self._state = RunState()
        self._events: tuple[Record, ...] = ()
        self._error: str | None = None
        self._label = ""

    def read(self, force: bool = False) -> tuple[RunState, tuple[Record, ...], str | None, str, int]:
        now = self._clock()
        if force or self._checked_at is None or now - self._checked_at >= _FILES_CHECK_S:
            self._checked_at = now
            folder = newest_run(self.home)
            key = None if folder is None else _files_key(folder)
            if force or key != self._key or self._loads == 0:
                self._key = key
                self._load(folder)
        return self._state, self._events, self._error, self._label, self._loads

    def _load(self, folder: Path | None) -> None:
        self._loads += 1
        self._state, self._events, self._error, self._label = RunState(), (), None, ""
        if folder is None:
            return
        self._label = f"runs/{folder.name}"
        try:
            # No supervisor runs: a run left active by a dead one is interrupted, whatever its files say.
            self._state = orphaned(replayed(folder))
            self._events = tuple(tail_records(folder, EVENT_LOG))
        except LedgerLost as exc:  # its totals cannot be told: say why, never show a wrong count
            self._state, self._error = RunState(run_id=folder.name), str(exc)
        except OSError as exc:
            self._state, self._error = RunState(run_id=folder.name), f"cannot read {folder}: {exc.strerror or exc}"


class LiveSource:
    """A :class:`LiveView` on the home's supervisor, plus a check that its process still exists.

    Silence alone takes ``stale_after_s`` to notice; a supervisor killed outright is noticed within a
    second by its pid in the connection file. While no supervisor runs, the home's newest run is shown
    from its files (not for a connection file naming a remote supervisor: this machine's files are not
    its runs).
    """

    def __init__(
        self, home: Path, *, stale_after_s: float = 3.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.home = home
        # With history: the Events view loads, a page at a time, what the live feed did not carry.
        self.view = LiveView(home, sender="dash", stale_after_s=stale_after_s, history=True).start()
        self._clock = clock
        self._checked_at = -_PID_CHECK_S
        self._gone = False
        self._down: str | None = None
        self._seen_live = False
        self._files = _NewestRun(home, clock)

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
            self._gone, self._down = False, "shut down" if self._seen_live else "absent"
            return
        self._gone = not info.remote and _pid_gone(info.pid)  # a remote pid is not ours to check
        self._down = "exited" if self._gone else "silent"

    def read(self) -> Feed:
        """The latest view, with the link marked down when the supervisor's process is gone; the newest
        run's files while no supervisor runs."""
        view = self.view.latest()
        self._check()
        connected = view.connected and not self._gone
        self._seen_live = self._seen_live or connected
        down = None if connected else self._down
        if down in NOT_RUNNING and not os.environ.get(BUS_ENV):
            return self._from_files(down)
        error = view.error
        if not connected and self._gone:
            error = error or "the supervisor's process has exited"
        if down == "silent" and view.silence_s is None:
            down = "connecting"
        state = orphaned(view.state) if self._gone else view.state
        link = Link("live", connected, view.silence_s, error, view.seq, down=down)
        silence = None if connected or view.silence_s is None else int(view.silence_s)
        version = (view.seq, connected, error, silence, view.state.run_id, view.state.event_count, down, view.loads)
        return Feed(state, link, view.events, version)

    def _from_files(self, down: str | None, force: bool = False) -> Feed:
        state, events, error, label, loads = self._files.read(force)
        link = Link("live", False, None, error, state.seq, label, down=down, home=str(self.home))
        return Feed(state, link, events, ("files", down, loads))

    def refresh(self) -> None:
        """Re-read the newest run's files while no supervisor runs (the subscriber is always current)."""
        if self._down in NOT_RUNNING:
            self._files.read(force=True)

    def close(self) -> None:
        """Stop the subscriber thread."""
        self.view.close()


class ReplaySource:
    """A run rebuilt from its files with the supervisor's own reducer; no supervisor needed."""

    def __init__(self, run_dir: Path, label: str) -> None:
        self.run_dir = run_dir
        self.label = label
        self._loads = 0
        self._feed = self._load()

    def _load(self) -> Feed:
        state = replayed(self.run_dir)
        if not _supervisor_alive(self.run_dir.parent.parent):
            state = orphaned(state)  # left active by a supervisor that is gone: interrupted, not running
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
