"""Finding the supervisor of a home, and starting one in the background when none runs.

A supervisor is "there" when ``<home>/run/bus.json`` names a live pid and its control socket answers
``ping``. Starting one runs ``autotrain-supervisor --home H --detach`` with this interpreter (so the same
install is used whatever ``PATH`` says) and the caller's environment (the agents it will start are found
through ``AUTOTRAIN_AGENT_<STAGE>`` variables there), then waits for that ``ping``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

from heidi_engine.bus.connection import BUS_ENV, BusInfo, ConnectionFileError, read_bus_info
from heidi_engine.bus.control import ControlClient
from heidi_engine.bus.errors import BusError

__all__ = [
    "LaunchError",
    "NoSupervisor",
    "ensure_supervisor",
    "find_supervisor",
    "local_supervisor",
    "pid_alive",
]

LAUNCH_TIMEOUT_S = 30.0
PING_TIMEOUT_S = 2.0


class NoSupervisor(Exception):
    """No supervisor answers on this home; the message says what was found instead."""


class LaunchError(Exception):
    """Starting a supervisor failed; ``exit_code`` is what the command line should return (1 or 2)."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def pid_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: it exists
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            return handle.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def local_supervisor(home: Path) -> BusInfo:
    """The connection file of a supervisor whose process is alive; :class:`NoSupervisor` otherwise.

    Cheap (one small file read, no socket), so the HTTP server's ``/health`` may call it per request.
    """
    try:
        info = read_bus_info(home)
    except ConnectionFileError as exc:
        raise NoSupervisor(str(exc)) from None
    if info.remote:
        return info  # a client connection file: the supervisor's pid is on another machine
    if not pid_alive(info.pid):
        raise NoSupervisor(f"no supervisor running on {home}: pid {info.pid} of its connection file is gone")
    return info


def find_supervisor(home: Path, *, timeout_s: float = PING_TIMEOUT_S) -> BusInfo:
    """The connection of a supervisor that answers ``ping``; :class:`NoSupervisor` otherwise."""
    info = local_supervisor(home)
    try:
        with ControlClient(info, sender="menu", timeout_s=timeout_s) as client:
            client.call("ping")
    except BusError as exc:
        who = f"at {info.control}" if info.remote else f"(pid {info.pid})"
        raise NoSupervisor(f"the supervisor {who} does not answer: {exc}") from None
    return info


def ensure_supervisor(home: Path, *, timeout_s: float = LAUNCH_TIMEOUT_S) -> tuple[BusInfo, bool]:
    """The running supervisor, or a new detached one; ``(info, started)``. :class:`LaunchError` on failure."""
    try:
        return find_supervisor(home), False
    except NoSupervisor as exc:
        if os.environ.get(BUS_ENV):
            # A remote supervisor is started on its own machine, never here.
            raise LaunchError(f"the remote supervisor of ${BUS_ENV} does not answer: {exc}") from None
    command = [sys.executable, "-m", "heidi_engine.supervisor.cli", "--home", str(home), "--detach"]
    try:
        # --detach returns once the daemon holds the home's lock; its own output goes to supervisor.log.
        done = subprocess.run(
            command, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LaunchError(f"cannot start autotrain-supervisor: {exc}") from None
    problem = (done.stderr or done.stdout).strip()
    if done.returncode == 2:
        raise LaunchError(problem or "autotrain-supervisor refused its configuration", exit_code=2)
    if done.returncode not in (0, 1):
        raise LaunchError(f"autotrain-supervisor exited {done.returncode}: {problem}")
    # Exit 1 is "another supervisor holds this home": one may be starting right now, so wait for it too.
    # The supervisor found is this call's only when it is the one its own --detach child started.
    said = re.search(r"\(pid (\d+)\)", done.stdout) if done.returncode == 0 else None
    mine = int(said.group(1)) if said else None
    deadline = time.monotonic() + timeout_s
    last = problem
    while time.monotonic() < deadline:
        try:
            info = find_supervisor(home, timeout_s=1.0)
            return info, info.pid == mine
        except NoSupervisor as exc:
            last = str(exc) if done.returncode == 0 else problem
        time.sleep(0.1)  # polling a file for a process we do not own: there is nothing to wait on
    log = home / "supervisor.log"
    see = f" (see {log})" if log.is_file() else ""  # never a pointer to a log that was not written
    raise LaunchError(f"the supervisor did not answer within {timeout_s:g} s: {last}{see}")
