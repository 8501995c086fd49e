"""Which sandbox runs generated code (the ``SANDBOX`` setting), decided from what this machine has.

The supervisor needs the answer to refuse a run at start and to show a warning; the validate and eval
agents need it to pick their backend. Both get it from :func:`resolve_sandbox`, a pure function of the
setting, whether ``bwrap`` is installed and whether the process is root:

- ``auto``: bubblewrap when ``bwrap`` is installed, else the built-in namespace sandbox when root, else
  nothing: the run is refused with a line that says what to install;
- ``bwrap`` / ``namespaces``: that backend, refused when this machine cannot provide it;
- ``none``: generated code runs unconfined, chosen explicitly and always reported as a warning.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, get_args

__all__ = [
    "INSTALL_HINT",
    "NONE_WARNING",
    "SandboxBackend",
    "SandboxChoice",
    "SandboxMode",
    "SandboxUnavailable",
    "choose_sandbox",
    "resolve_sandbox",
    "sandbox_warning",
]

SandboxMode = Literal["auto", "bwrap", "namespaces", "none"]
SandboxBackend = Literal["bwrap", "namespaces", "none"]

INSTALL_HINT = (
    "install bubblewrap (Debian/Ubuntu: apt-get install bubblewrap; Fedora: dnf install bubblewrap)"
)
NONE_WARNING = "SANDBOX none: generated code runs unconfined, with this user's files, keys and network"


class SandboxUnavailable(RuntimeError):
    """The configured sandbox cannot isolate generated code on this machine; the message is one line
    that says what to install or change."""


@dataclass(frozen=True)
class SandboxChoice:
    """The backend that runs generated code, and the warning to show for it (None when confined)."""

    backend: SandboxBackend
    warning: str | None = None


def resolve_sandbox(mode: str, *, bwrap: str | None, root: bool) -> SandboxChoice:
    """The backend for ``mode`` given where ``bwrap`` is (None: not installed) and whether we are root.

    Raises :class:`SandboxUnavailable` when ``mode`` cannot be honoured here, and ValueError for a mode
    that is not one of ``auto``, ``bwrap``, ``namespaces``, ``none``.
    """
    if mode not in get_args(SandboxMode):
        raise ValueError(f"SANDBOX must be one of {', '.join(get_args(SandboxMode))}, got {mode!r}")
    if mode == "none":
        return SandboxChoice("none", NONE_WARNING)
    if mode == "bwrap" or (mode == "auto" and bwrap is not None):
        if bwrap is None:
            raise SandboxUnavailable(f"SANDBOX is bwrap but bwrap is not on PATH: {INSTALL_HINT}")
        return SandboxChoice("bwrap")
    if root:
        return SandboxChoice("namespaces")
    which = "auto" if mode == "auto" else "namespaces (it needs root)"
    raise SandboxUnavailable(
        f"the unit-test gate cannot isolate generated code here (SANDBOX {which}, not root, no bwrap): "
        f"{INSTALL_HINT}, or set SANDBOX to none to run it unconfined"
    )


def choose_sandbox(mode: str) -> SandboxChoice:
    """:func:`resolve_sandbox` for this process: ``bwrap`` looked up on PATH, root from the euid."""
    return resolve_sandbox(mode, bwrap=shutil.which("bwrap"), root=os.geteuid() == 0)


def sandbox_warning(config: Mapping[str, object] | None) -> str | None:
    """The warning a run's (redacted) configuration calls for: :data:`NONE_WARNING` when the unit-test
    gate is on with ``SANDBOX`` none, else None. For the dashboard header and ``--status``."""
    if config and config.get("RUN_UNIT_TESTS") == "1" and config.get("SANDBOX") == "none":
        return NONE_WARNING
    return None
