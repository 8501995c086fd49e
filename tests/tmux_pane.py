"""A dashboard in a real terminal, for the tests: a detached tmux server of its own running a command in a
pane, driven with send-keys and read with capture-pane."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

DASH = [sys.executable, "-m", "heidi_engine.ui.dash_cli"]


class Pane:
    """A detached tmux server (own socket) running the dashboard in a 120x40 pane.

    After the dashboard exits, the pane's shell prints its exit code and the terminal's settings, and
    stays open so that both can be read.
    """

    def __init__(self, args: list[str], width: int = 120, height: int = 40) -> None:
        self.socket = f"dash-test-{uuid.uuid4().hex[:10]}"
        command = shlex.join([*DASH, *args])
        shell = f'{command} 2>>/tmp/{self.socket}.err; echo "dash exited rc=$?"; stty -a; sleep 600'
        self._tmux(
            "-f", "/dev/null", "new-session", "-d", "-x", str(width), "-y", str(height), shell, check=True
        )
        self.socket_path = self._tmux("display-message", "-p", "#{socket_path}").strip()

    def _tmux(self, *args: str, check: bool = False) -> str:
        # The server inherits this environment: sizes set for the test runner would override the pane's.
        env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
        done = subprocess.run(
            ["tmux", "-L", self.socket, *args], capture_output=True, text=True, check=check, env=env
        )
        return done.stdout

    def text(self) -> str:
        return self._tmux("capture-pane", "-p")

    def press(self, *keys: str) -> None:
        """Send keys (tmux names such as ``Up``, ``PPage``, ``Escape``, or single characters)."""
        self._tmux("send-keys", *keys)

    def type(self, text: str) -> None:
        self._tmux("send-keys", "-l", text)

    def wait(self, what: str | tuple[str, ...] | Callable[[str], object], timeout_s: float = 10.0) -> str:
        """The pane's text once it contains ``what`` (all of them, for a tuple) or satisfies it.

        A frame may be captured half drawn, so everything a step checks goes into one condition.
        """
        if isinstance(what, str):
            what = (what,)
        check = (lambda text: all(part in text for part in what)) if isinstance(what, tuple) else what
        deadline = time.monotonic() + timeout_s
        while True:
            text = self.text()
            if check(text):
                return text
            if time.monotonic() > deadline:
                err = Path(f"/tmp/{self.socket}.err")
                stderr = err.read_text(errors="replace")[-2000:] if err.exists() else ""
                raise AssertionError(f"timed out waiting for {what!r}; screen:\n{text}\nstderr:\n{stderr}")
            time.sleep(0.05)

    def key(
        self, key: str, expect: str | tuple[str, ...] | Callable[[str], object], timeout_s: float = 10.0
    ) -> str:
        """Press ``key`` and wait for its effect."""
        self.press(key)
        return self.wait(expect, timeout_s)

    def dashboard_pid(self) -> int:
        """The dashboard's process: a child of the pane's shell, running dash_cli."""
        shell = psutil.Process(int(self._tmux("list-panes", "-F", "#{pane_pid}").split()[0]))
        for proc in [shell, *shell.children(recursive=True)]:
            if "heidi_engine.ui.dash_cli" in proc.cmdline():
                return proc.pid
        raise AssertionError("no dashboard process in the pane")

    def kill(self) -> None:
        self._tmux("kill-server")
        Path(f"/tmp/{self.socket}.err").unlink(missing_ok=True)
        if self.socket_path:
            Path(self.socket_path).unlink(missing_ok=True)


@pytest.fixture
def pane() -> Iterator[Callable[..., Pane]]:
    """Open tmux panes running a command (``pane(*argv)``); every one is killed after the test."""
    opened: list[Pane] = []

    def open_pane(*args: str) -> Pane:
        opened.append(Pane(list(args)))
        return opened[-1]

    yield open_pane
    for each in opened:
        each.kill()
