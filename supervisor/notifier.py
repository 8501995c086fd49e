"""systemd's notify protocol (sd_notify(3)) without libsystemd: READY, STATUS, WATCHDOG and STOPPING.

Under a ``Type=notify`` unit systemd passes ``NOTIFY_SOCKET`` (a path, or ``@name`` for the abstract
namespace) and, with ``WatchdogSec=``, ``WATCHDOG_USEC``. :class:`Notifier` sends one datagram per message
to that socket; without ``NOTIFY_SOCKET`` every call does nothing, so the daemon runs the same anywhere.
The watchdog is pinged from the supervisor's loop at half the interval: a loop that hangs stops the
pings, and systemd restarts the daemon.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Mapping

from heidi_engine.bus.state import RunState

__all__ = ["Notifier", "status_line"]

log = logging.getLogger(__name__)


def status_line(state: RunState) -> str:
    """What ``systemctl --user status`` shows: the run, its status, round and stage, or idle."""
    if state.run_id is None:
        return "idle: no run yet"
    line = f"{state.run_id} {state.status}"
    if state.total_rounds:
        line += f" · round {state.current_round}/{state.total_rounds}"
    if state.current_stage and state.status in ("running", "paused"):
        line += f" · {state.current_stage}"
    if state.teacher_outage is not None:
        line += f" · {state.teacher_outage.describe()}"
    return line


class Notifier:
    """Sends sd_notify messages to ``NOTIFY_SOCKET``; a no-op when systemd did not ask for them."""

    def __init__(
        self, env: Mapping[str, str] | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        environ = os.environ if env is None else env
        target = environ.get("NOTIFY_SOCKET", "")
        # An abstract socket is written "@name"; the kernel wants a leading NUL byte instead.
        self.address = "\0" + target[1:] if target.startswith("@") else target
        watchdog_pid = environ.get("WATCHDOG_PID", "")
        usec = environ.get("WATCHDOG_USEC", "")
        mine = not watchdog_pid or watchdog_pid == str(os.getpid())
        self.watchdog_s = int(usec) / 1e6 / 2 if usec.isdigit() and int(usec) > 0 and mine else None
        self.clock = clock
        self._last_ping = float("-inf")
        self._last_status = ""
        self._failed = False

    @property
    def enabled(self) -> bool:
        """Whether systemd is listening (``NOTIFY_SOCKET`` was set)."""
        return bool(self.address)

    def send(self, **fields: str) -> bool:
        """One datagram of ``KEY=VALUE`` lines; True when it was sent. Failures are logged once, never raised."""
        if not self.address:
            return False
        payload = "\n".join(f"{key}={value}" for key, value in fields.items()).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto(payload, self.address)
        except OSError as exc:
            if not self._failed:
                self._failed = True
                log.warning("cannot notify systemd at NOTIFY_SOCKET: %s", exc)
            return False
        return True

    def ready(self, state: RunState) -> None:
        """The daemon serves: ``READY=1`` with its pid and first status line."""
        self._last_status = status_line(state)
        self.send(READY="1", MAINPID=str(os.getpid()), STATUS=self._last_status)

    def tick(self, state: RunState) -> None:
        """From the loop: a new STATUS when the line changed, WATCHDOG=1 every half watchdog interval."""
        fields: dict[str, str] = {}
        line = status_line(state)
        if line != self._last_status:
            self._last_status = fields["STATUS"] = line
        now = self.clock()
        if self.watchdog_s is not None and now - self._last_ping >= self.watchdog_s:
            self._last_ping = now
            fields["WATCHDOG"] = "1"
        if fields:
            self.send(**fields)

    def stopping(self) -> None:
        """The daemon is shutting down: ``STOPPING=1``."""
        self.send(STOPPING="1", STATUS="shutting down")
