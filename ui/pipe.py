"""A closed output pipe ends a command quietly: ``autotrain-menu --list | head -1`` prints no traceback.

When the reader of stdout goes away (``head``, ``less`` quit early), the next write raises
``BrokenPipeError``, and so would the interpreter's own flush at exit. :func:`quiet_on_closed_pipe`
wraps an entry point: the rest of its output goes to ``/dev/null`` and the command exits 0, since a
reader that has seen enough is not a failure of the command (as ``git log | head`` does).
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Sequence
from typing import Protocol

__all__ = ["quiet_on_closed_pipe"]

class Main(Protocol):
    """A command's entry point: ``main(argv=None) -> exit code``."""

    def __call__(self, argv: Sequence[str] | None = None) -> int: ...


def _silence_stdout() -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    finally:
        os.close(devnull)


def quiet_on_closed_pipe(main: Main) -> Main:
    """``main`` with a closed stdout pipe turned into a quiet exit 0."""

    @functools.wraps(main)
    def wrapper(argv: Sequence[str] | None = None) -> int:
        try:
            code = main(argv)
            sys.stdout.flush()  # inside the try: the flush at exit would report the closed pipe
        except BrokenPipeError:
            _silence_stdout()
            return 0
        return code

    return wrapper
