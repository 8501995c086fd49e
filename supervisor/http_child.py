"""The HTTP status server as a supervised child: started, watched, reaped, and restarted with back-off.

The server is a bus client like any viewer, run by the daemon when ``HTTP_ENABLED`` is ``"1"``. When it
exits (the port is taken, it crashed) the daemon reaps it at once, logs why (its exit status and the
last line it wrote), keeps the problem in :attr:`HttpChild.error` (the daemon puts it in the state's ``http_error``,
which ``--status``, the menu and the dashboard show), and starts it again after a back-off that doubles up to a minute.
A server that stayed up for a while counts as healthy again, so the next failure retries quickly.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from heidi_engine.supervisor.process import AgentProcess, describe_exit, spawn, terminate_group

__all__ = ["HttpChild"]

log = logging.getLogger(__name__)

LOG_FILE = "http.log"
FIRST_RETRY_S = 1.0
MAX_RETRY_S = 60.0
HEALTHY_AFTER_S = 30.0
_TAIL_BYTES = 4096
SERVING = "HTTP status server: serving "


def _last_line(path: Path) -> str:
    """The last non-empty line of ``path`` (what a failing server said last), or ``""``."""
    try:
        with path.open("rb") as handle:
            size = handle.seek(0, 2)
            handle.seek(max(0, size - _TAIL_BYTES))
            tail = handle.read().decode("utf-8", "replace")
    except OSError:
        return ""
    lines = [line.strip() for line in tail.splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


class HttpChild:
    """One HTTP status server child of the daemon; call :meth:`tick` from the daemon's loop."""

    def __init__(
        self,
        home: Path,
        port: int,
        *,
        env: Mapping[str, str],
        clock: Callable[[], float] = time.monotonic,
        control: bool = False,
    ) -> None:
        self.home = home
        self.control = control
        self.port = port
        self.env = dict(env)
        self.clock = clock
        self.process: AgentProcess | None = None
        self.error: str | None = None
        self.failures = 0
        self.retry_at: float | None = None
        self._started_at = 0.0

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        """Where the server's output goes."""
        return self.home / LOG_FILE

    def start(self) -> None:
        """Start the server now."""
        argv = [sys.executable, "-m", "heidi_engine.ui.http", "--home", str(self.home), "--port", str(self.port)]
        if self.control:
            argv.append("--control")
        self.retry_at = None
        try:
            self.process = spawn("http", argv, env=self.env, cwd=str(self.home), log_path=str(self.log_path))
        except OSError as exc:
            self._failed(f"cannot start: {exc}")
            return
        self._started_at = self.clock()
        log.info("HTTP status server starting on %s (pid %d, log %s)", self.url, self.process.pid, self.log_path)
        if self.control:
            # The token itself stays out of the daemon's log (which may be shipped elsewhere).
            log.info("its browser page may steer the run: the URL with the token is in %s and %s",
                     self.log_path, self.home / "http_control.token")

    def tick(self) -> None:
        """Reap an exited server (and report why), restart it when its back-off is over."""
        now = self.clock()
        process = self.process
        if process is not None:
            code = process.poll()
            if code is None:
                if self.failures and now - self._started_at >= HEALTHY_AFTER_S:
                    self.failures = 0
                # Up once it says it is serving (a server that cannot bind says so and exits instead).
                if self.error is not None and _last_line(self.log_path).startswith(SERVING):
                    self._set_error(None)
                    log.info("HTTP status server on %s is up again (pid %d)", self.url, process.pid)
                return
            self.process = None
            said = _last_line(self.log_path)
            self._failed(f"exited with {describe_exit(code)}" + (f": {said}" if said else ""))
            return
        if self.retry_at is not None and now >= self.retry_at:
            self.start()

    def _failed(self, why: str) -> None:
        delay = min(MAX_RETRY_S, FIRST_RETRY_S * 2 ** self.failures)
        self.failures += 1
        self.retry_at = self.clock() + delay
        message = f"HTTP status server on {self.url} is down ({why}); retrying in {delay:g} s"
        log.error("%s", message)
        self._set_error(message)

    def _set_error(self, error: str | None) -> None:
        self.error = error

    def describe(self) -> dict[str, object]:
        """What ``status`` reports: the URL, the pid while one runs, and the problem while it is down."""
        return {"url": self.url, "pid": None if self.process is None else self.process.pid, "error": self.error}

    def close(self) -> None:
        """Stop the server (its group) and reap it."""
        if self.process is not None:
            terminate_group(self.process, 5.0)
            self.process = None
        self.retry_at = None
