"""The installed AutoTrain supervisor's version, for ``--version`` and the build info on ``/metrics``."""

from __future__ import annotations

from importlib import metadata

__all__ = ["DISTRIBUTION", "version", "version_line"]

DISTRIBUTION = "autotrain-supervisor"


def version() -> str:
    """The installed distribution's version ("unknown" when run from a tree that is not installed)."""
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return "unknown"


def version_line(prog: str) -> str:
    """What ``PROG --version`` prints: ``PROG (AutoTrain supervisor) X.Y.Z``."""
    return f"{prog} (AutoTrain supervisor) {version()}"
