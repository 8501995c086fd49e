"""The dashboard's run controls: ``p`` pause, ``u`` unpause, ``s`` stop (after a y/n confirmation; a
run that is not active is not asked about: the refusal and its reason come at once).

Commands go to the home's supervisor on its control socket from a short-lived thread, so a slow or gone
supervisor never freezes the screen; what happened (requested, refused, not reachable) is shown in the
footer as the control's notice until the next key or for a few seconds.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

from heidi_engine.bus.control import ControlClient
from heidi_engine.bus.errors import BusError, CommandRefused
from heidi_engine.bus.state import ACTIVE_STATUSES, RESUMABLE_STATUSES
from heidi_engine.ui.connect import NoSupervisor, find_supervisor

__all__ = ["RunControl"]

_CALL_TIMEOUT_S = 3.0
_NOTICE_S = 6.0
_COMMANDS = {"p": "pause", "u": "resume"}
_DONE = {
    "pause": "pause requested: the run parks at its next safe boundary",
    "resume": "unpaused",
    "stop": "stop requested: the running stage finishes at its next boundary",
}


def _nothing_to_stop(status: str) -> str:
    if status == "idle":
        return "stop: no run to stop"
    if status in RESUMABLE_STATUSES:
        return f"stop: nothing to stop, the run is {status} (autotrain-menu --resume-run continues it)"
    return f"stop: nothing to stop, the run is {status}"


class RunControl:
    """Turns the control keys into supervisor commands; :meth:`notice` is the footer's line."""

    def __init__(self, home: Path, clock: Callable[[], float] = time.monotonic) -> None:
        self.home = home
        self.confirming = False
        self._clock = clock
        self._notice: tuple[str, float] | None = None
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def key(self, key: str, status: str | None = None) -> bool:
        """Handle ``key`` if it is a control key (or the answer to the stop question); True when handled.

        ``status`` is the shown run's: ``s`` on a run that is not active says at once why there is
        nothing to stop instead of asking first (``None``: not known, ask)."""
        if self.confirming:
            self.confirming = False
            if key in ("y", "Y"):
                self._send("stop")
            else:
                self._say("stop cancelled: the run goes on")
            return True
        if key in _COMMANDS:
            self._send(_COMMANDS[key])
            return True
        if key == "s":
            if status is not None and status not in ACTIVE_STATUSES:
                self._say(_nothing_to_stop(status))
            else:
                self.confirming = True
            return True
        return False

    def notice(self) -> str | None:
        """The confirmation question, or the last command's outcome while it is recent."""
        if self.confirming:
            return "stop the run at its next stage boundary? y/n"
        with self._lock:
            if self._notice is None or self._clock() - self._notice[1] > _NOTICE_S:
                return None
            return self._notice[0]

    def wait(self, timeout_s: float = _CALL_TIMEOUT_S * 2) -> None:
        """Wait for the commands in flight (tests, and a clean exit)."""
        for thread in self._threads:
            thread.join(timeout_s)
        self._threads = [t for t in self._threads if t.is_alive()]

    def _say(self, text: str) -> None:
        with self._lock:
            self._notice = (text, self._clock())

    def _send(self, name: str) -> None:
        self._say(f"{name}: sending…")
        thread = threading.Thread(target=self._call, args=(name,), name=f"dash-{name}", daemon=True)
        self._threads = [t for t in self._threads if t.is_alive()] + [thread]
        thread.start()

    def _call(self, name: str) -> None:
        try:
            info = find_supervisor(self.home, timeout_s=_CALL_TIMEOUT_S)
            with ControlClient(info, sender="dash", timeout_s=_CALL_TIMEOUT_S) as client:
                client.call(name)
        except NoSupervisor as exc:
            self._say(f"{name}: no supervisor reachable: {exc}")
        except CommandRefused as exc:
            self._say(f"{name} refused: {exc}")
        except BusError as exc:
            self._say(f"{name} failed: {exc}")
        else:
            self._say(_DONE[name])
