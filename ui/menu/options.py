"""The handlers of the interactive menu's options that do more than call one action of the
:class:`~heidi_engine.ui.menu.actions.Controller`: start a run after asking for its size, resume the
paused or the last run, run the dashboard in the foreground, and keep the HTTP status server running in
the background until the menu exits.
"""

from __future__ import annotations

import contextlib
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from prompt_toolkit import PromptSession

from heidi_engine.bus.control import ControlClient
from heidi_engine.bus.errors import BusError
from heidi_engine.bus.exit_status import EXIT_INTERRUPTED, EXIT_OK
from heidi_engine.bus.redaction import clean
from heidi_engine.bus.state import ACTIVE_STATUSES
from heidi_engine.ui.connect import NoSupervisor, find_supervisor
from heidi_engine.ui.menu.actions import Controller
from heidi_engine.ui.menu.config_edit import BackOut, ask_value, effective_values

__all__ = ["MenuOptions", "dashboard_command"]

_HTTP_START_TIMEOUT_S = 10.0


def dashboard_command(home: Path) -> list[str] | None:
    """``autotrain-dash --home H``: the script beside this interpreter, else the one on PATH."""
    beside = Path(sys.executable).parent / "autotrain-dash"
    found = str(beside) if beside.exists() else shutil.which("autotrain-dash")
    return None if found is None else [found, "--home", str(home)]


@contextlib.contextmanager
def _ignoring_sigint() -> Iterator[None]:
    """Ctrl+C in a foreground child reaches the menu too (same process group); only the child should stop."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


class MenuOptions:
    """The menu's option handlers and what they keep (the HTTP server child); the prompt loop that calls
    them is :class:`~heidi_engine.ui.menu.interactive.Menu`."""

    def __init__(self, controller: Controller, session: PromptSession[str] | None = None) -> None:
        self.controller = controller
        self.session: PromptSession[str] = session or PromptSession()
        self.http: subprocess.Popen[str] | None = None
        self.http_url: str | None = None

    def start_new_run(self) -> None:
        """Ask for rounds and samples (Enter keeps what a run would use), then start; the supervisor too
        if needed. Refused before any question while a run is active."""
        busy = self._active_run()
        if busy is not None:
            self.controller.complain(f"{busy}; stop it first (option 3) or watch it (option 7)")
            return
        effective = effective_values(self.controller.config_path)
        overrides: dict[str, str] = {}
        for name in ("ROUNDS", "SAMPLES_PER_ROUND"):
            value, source = effective[name]
            try:
                raw = ask_value(self.session, name, value, source)
            except BackOut:
                self.controller.say("(cancelled)")
                return
            if raw != value:
                overrides[name] = raw
        self.controller.start(overrides)

    def _active_run(self) -> str | None:
        """``a run is already running (run_…)`` when the supervisor has an active run, else ``None``."""
        try:
            info = find_supervisor(self.controller.home, timeout_s=1.0)
            with ControlClient(info, sender="menu", timeout_s=2.0) as client:
                status = client.call("status")
        except (NoSupervisor, BusError):
            return None
        if status.get("status") in ACTIVE_STATUSES:
            return f"a run is already {clean(str(status.get('status')))} ({clean(str(status.get('run_id')))})"
        return None

    def resume_last_run(self) -> None:
        """Resume a paused run, else continue the last stopped or interrupted one."""
        try:
            info = find_supervisor(self.controller.home, timeout_s=1.0)
        except NoSupervisor:
            info = None
        if info is not None:
            with contextlib.suppress(BusError), ControlClient(info, sender="menu", timeout_s=2.0) as client:
                if client.call("status").get("pause_requested"):
                    self.controller.control("resume")
                    return
        self.controller.resume_run(None)

    def view_dashboard(self) -> None:
        """Run autotrain-dash in the foreground; the menu returns when it exits."""
        command = dashboard_command(self.controller.home)
        if command is None:
            self.controller.complain("autotrain-dash is not installed next to this interpreter or on PATH")
            return
        with _ignoring_sigint():
            code = subprocess.call(command)
        if code not in (EXIT_OK, EXIT_INTERRUPTED, -signal.SIGINT):
            self.controller.complain(f"the dashboard exited {code}")

    def start_http(self) -> None:
        """Ask for the port (Enter keeps HTTP_PORT), then start the HTTP status server in the background
        (until the menu exits) and print its URL."""
        if self.http is not None and self.http.poll() is None:
            self.controller.say(f"HTTP status server already running at {self.http_url}")
            return
        port, source = effective_values(self.controller.config_path)["HTTP_PORT"]
        try:
            port = ask_value(self.session, "HTTP_PORT", port, source)
        except BackOut:
            self.controller.say("(cancelled)")
            return
        command = [
            sys.executable, "-m", "heidi_engine.ui.http", "--home", str(self.controller.home), "--port", port,
        ]  # fmt: skip
        # Same process group as the menu, so that it dies with the menu's terminal; SIGINT ignored, so
        # that Ctrl+C in the foreground dashboard does not take it down.
        self.http = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=_ignore_sigint,
        )
        line = _first_line(self.http, _HTTP_START_TIMEOUT_S)
        control = None
        if line is not None and " control at " in line:  # HTTP_CONTROL: the URL with the token comes first
            # The serving line follows at once (or the pipe ends): read it even if already buffered.
            assert self.http.stdout is not None
            control, line = line.strip(), self.http.stdout.readline() or None
        if line is None or "http://" not in line:
            problem = (
                self.http.stderr.read().strip() if self.http.poll() is not None and self.http.stderr else ""
            )
            self.stop_http()
            self.controller.complain(
                f"the HTTP status server did not start: {problem or line or 'no answer'}"
            )
            return
        self.http_url = line[line.index("http://") :].split()[0]
        self.controller.say(f"HTTP status server running at {self.http_url} (until you exit the menu)")
        if control is not None:
            self.controller.say(control)

    def stop_http(self) -> None:
        if self.http is None:
            return
        if self.http.poll() is None:
            self.http.terminate()
            try:
                self.http.wait(5)
            except subprocess.TimeoutExpired:
                self.http.kill()
                self.http.wait(5)
        for stream in (self.http.stdout, self.http.stderr):
            if stream is not None:
                stream.close()
        self.http = None


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _first_line(proc: subprocess.Popen[str], timeout_s: float) -> str | None:
    """The child's first stdout line, or ``None`` if it exits or stays silent until the deadline."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout_s
    while (remaining := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([proc.stdout], [], [], min(remaining, 0.2))
        if ready:
            return proc.stdout.readline() or None
        if proc.poll() is not None:
            return None
    return None
