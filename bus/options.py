"""The option builder of every command, so that they read the same everywhere: the parser itself (its
examples kept as written, ``--version``), ``--home`` (and how a home is found) and ``--bus`` (a remote
supervisor's client connection file)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from heidi_engine.bus.build import version_line
from heidi_engine.bus.connection import BUS_ENV

__all__ = ["HOME_ENV", "add_bus_option", "add_home_option", "command_parser", "resolve_home"]

HOME_ENV = "AUTOTRAIN_HOME"


def command_parser(prog: str, description: str, epilog: str = "") -> argparse.ArgumentParser:
    """A command's parser: ``epilog`` (examples, exit codes) shown as written, and ``--version``."""
    parser = argparse.ArgumentParser(prog=prog, description=description, epilog=epilog or None,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--version", action="version", version=version_line(prog))
    return parser


def add_home_option(parser: argparse.ArgumentParser) -> None:
    """``--home DIR`` (a :class:`~pathlib.Path`, ``None`` when not given: see :func:`resolve_home`)."""
    parser.add_argument("--home", type=Path, default=None,
                        help=f"home folder (default: ${HOME_ENV}, else the current directory)")  # fmt: skip


def add_bus_option(parser: argparse.ArgumentParser) -> None:
    """``--bus FILE``: a client connection file of a remote supervisor."""
    parser.add_argument("--bus", metavar="FILE", default=None,
                        help=f"a client connection file of a remote supervisor (default: ${BUS_ENV})")  # fmt: skip


def resolve_home(home: str | os.PathLike[str] | None) -> Path:
    """``--home``, else ``$AUTOTRAIN_HOME``, else the current directory; absolute."""
    chosen = Path(home) if home is not None else Path(os.environ.get(HOME_ENV) or os.getcwd())
    return chosen.expanduser().resolve()
