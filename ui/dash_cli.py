# PYTHON_ARGCOMPLETE_OK
"""``autotrain-dash``: the live Rich dashboard, one frame of it (``--once``), or a finished run's replay.

With no supervisor running in the home (none ever, or it shut down or died), the dashboard shows the
home's newest run from its files, as ``--run`` does, and says "supervisor not running"; live mode switches
to the supervisor as soon as one answers.

Exit codes: 0 ok; 2 bad usage (a malformed or unknown run id, a bad option, no terminal for live mode);
3 no supervisor reachable (``--once`` on a supervisor that runs but does not answer, or one named by
``--bus``/``$AUTOTRAIN_BUS``; live mode keeps trying and says so on screen).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

from rich.console import Console

from heidi_engine.bus.connection import (
    BUS_ENV,
    ConnectionFileError,
    connection_path,
    read_bus_info,
    use_bus_file,
)
from heidi_engine.bus.event import is_run_id
from heidi_engine.bus.exit_status import EXIT_BAD_USAGE, EXIT_FAILURE, EXIT_NO_SUPERVISOR, EXIT_OK
from heidi_engine.bus.ledger import LedgerLost
from heidi_engine.bus.options import (
    HomeError,
    add_bus_option,
    add_home_option,
    command_parser,
    open_home,
    resolve_home,
)
from heidi_engine.ui.completion import enable as enable_completion
from heidi_engine.ui.dashboard.app import DEFAULT_REFRESH_HZ, Dashboard, LiveSource, ReplaySource, Source
from heidi_engine.ui.dashboard.controls import RunControl
from heidi_engine.ui.dashboard.frame import VIEWS, Frame
from heidi_engine.ui.dashboard.keys import Keyboard
from heidi_engine.ui.dashboard.screen import render
from heidi_engine.ui.pipe import quiet_on_closed_pipe

_ONCE_WAIT_S = 3.0
_MIN_HZ, _MAX_HZ = 0.2, 30.0


class UsageError(Exception):
    """A command-line mistake: reported on stderr with exit code 2."""


def _parser() -> argparse.ArgumentParser:
    parser = command_parser(
        "autotrain-dash",
        "Live dashboard of the AutoTrain supervisor (keys: q quit, r refresh, 1-6 views, ? help).",
        """examples:
  autotrain-dash                                  # the live dashboard of $AUTOTRAIN_HOME (or the current folder)
  autotrain-dash --view 4                         # open on the event log
  autotrain-dash --once --view 2                  # print one frame, for scripts
  autotrain-dash --run run_20261129_081502_3f9a1c2e   # replay a finished run from its files
  autotrain-dash --bus laptop.bus.json            # a supervisor on another machine (autotrain-supervisor --issue-client)

with no supervisor running, the newest run of the home is shown from its files ("supervisor not running").

exit codes: 0 success, 2 bad usage, 3 no supervisor reachable (--once: one that runs but does not answer,
or the one --bus names)""",
    )
    add_home_option(parser)
    add_bus_option(parser)
    parser.add_argument("--run", metavar="RUN_ID", help="replay a run from its files, no supervisor needed")
    parser.add_argument(
        "--view",
        type=int,
        default=1,
        choices=range(1, len(VIEWS) + 1),
        metavar="1-6",
        help="the view to open: " + ", ".join(f"{i} {name}" for i, name in enumerate(VIEWS, 1)),
    )
    parser.add_argument("--once", action="store_true", help="print one frame and exit (for scripts)")
    parser.add_argument(
        "--refresh",
        type=float,
        default=DEFAULT_REFRESH_HZ,
        metavar="HZ",
        help=f"screen refreshes per second (default {DEFAULT_REFRESH_HZ:g}; {_MIN_HZ:g}-{_MAX_HZ:g})",
    )
    return parser


def home_folder(value: Path | None) -> Path:
    """The home (:func:`~heidi_engine.bus.options.resolve_home`); it must be a folder."""
    try:
        return open_home(resolve_home(value), create=False)  # a viewer names a missing home, never makes it
    except HomeError as exc:
        raise UsageError(str(exc)) from None


def run_folder(home: Path, run_id: str) -> Path:
    """``<home>/runs/<run_id>`` for a well-formed id of an existing run."""
    if not is_run_id(run_id):
        raise UsageError(f"--run {run_id[:80]!r} is not a run id (expected run_YYYYMMDD_HHMMSS_<8 hex>)")
    folder = home / "runs" / run_id
    if not folder.is_dir():
        raise UsageError(f"no run {run_id} in {home / 'runs'}")
    return folder


def _supervisor_absent(home: Path) -> str | None:
    """Why no supervisor can be there, when that is certain without waiting; ``None`` otherwise."""
    path = Path(os.environ.get(BUS_ENV) or connection_path(home))
    if not path.exists():
        return f"no supervisor has run in {home} (no {path})" if path == connection_path(home) else f"no {path}"
    try:
        info = read_bus_info(home)
    except ConnectionFileError as exc:
        return str(exc)
    if info.remote:
        return None  # a supervisor on another machine: only its answer tells
    try:
        os.kill(info.pid, 0)
    except ProcessLookupError:
        return f"the supervisor (pid {info.pid}) recorded in {path} is not running"
    except PermissionError:
        pass
    return None


def print_once(source: Source, view: int, console: Console) -> None:
    """One frame of ``view`` at the console's width and natural height."""
    feed = source.read()
    frame = Frame(feed.state, feed.link, datetime.now(timezone.utc), view, feed.events)
    console.print(render(frame, console.width, None))


def _once_live(home: Path, view: int, console: Console) -> int:
    absent = _supervisor_absent(home)
    if absent is not None and os.environ.get(BUS_ENV):
        print(f"autotrain-dash: no supervisor reachable: {absent}", file=sys.stderr)
        return EXIT_NO_SUPERVISOR
    source = LiveSource(home)
    try:
        if absent is not None:  # none runs here: the newest run as its files tell it
            print_once(source, view, console)
            return EXIT_OK
        if source.view.wait_for(lambda v: v.connected, _ONCE_WAIT_S) is None:
            reason = source.view.latest().error or f"no answer within {_ONCE_WAIT_S:g} s"
            print(f"autotrain-dash: no supervisor reachable in {home}: {reason}", file=sys.stderr)
            return EXIT_NO_SUPERVISOR
        print_once(source, view, console)
    finally:
        source.close()
    return EXIT_OK


def _live(source: Source, args: argparse.Namespace) -> int:
    console = Console()
    control = RunControl(source.home) if isinstance(source, LiveSource) else None
    dashboard = Dashboard(source, console, refresh_hz=args.refresh, view=args.view, control=control)
    if not sys.stdin.isatty():
        return dashboard.run(None)
    with Keyboard(sys.stdin.fileno()) as keyboard:
        return dashboard.run(keyboard)


@quiet_on_closed_pipe
def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``autotrain-dash``; returns the exit code."""
    parser = _parser()
    enable_completion(parser)
    args = parser.parse_args(argv)
    try:
        if not _MIN_HZ <= args.refresh <= _MAX_HZ:
            raise UsageError(f"--refresh {args.refresh:g} is out of range ({_MIN_HZ:g}-{_MAX_HZ:g} Hz)")
        if args.bus is not None:
            if args.run is not None:
                raise UsageError("--run replays a run from this machine's files; it does not go with --bus")
            try:
                use_bus_file(args.bus)
            except ConnectionFileError as exc:
                raise UsageError(str(exc)) from None
        home = home_folder(args.home)
        folder = run_folder(home, args.run) if args.run is not None else None
        if not args.once and not sys.stdout.isatty():
            raise UsageError("the live dashboard needs a terminal; use --once to print one frame")
    except UsageError as exc:
        print(f"autotrain-dash: {exc}", file=sys.stderr)
        return EXIT_BAD_USAGE
    source: Source
    if folder is not None:
        try:
            source = ReplaySource(folder, f"runs/{folder.name}")
        except LedgerLost as exc:  # its totals cannot be told: one line saying why, never a wrong count
            print(f"autotrain-dash: {exc}", file=sys.stderr)
            return EXIT_FAILURE
    elif args.once:
        return _once_live(home, args.view, Console())
    else:
        source = LiveSource(home)
    try:
        if args.once:
            print_once(source, args.view, Console())
            return EXIT_OK
        return _live(source, args)
    except KeyboardInterrupt:
        return EXIT_OK
    finally:
        source.close()


if __name__ == "__main__":
    sys.exit(main())
