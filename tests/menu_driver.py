"""Driving autotrain-menu the way a person does, for the tests: a pseudo-terminal that renders what the
menu draws (ANSI and all) into a screen of text, the menu's non-interactive runs, and fixtures for a
detached supervisor and a free port."""

from __future__ import annotations

import codecs
import fcntl
import os
import pty
import re
import select
import signal
import socket
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from harness import agent_env, pid_alive, scripted, wait_until

from heidi_engine.bus.connection import ConnectionFileError, read_bus_info
from heidi_engine.bus.control import ControlClient
from heidi_engine.bus.errors import BusError

MENU = [sys.executable, "-m", "heidi_engine.ui.menu_cli"]
SLOW_AGENT = agent_env(scripted("--events", "400", "--delay", "0.05"))
QUICK_AGENT = agent_env(scripted("--events", "5", "--delay", "0.01"))
CONFIG = "# the rounds of a test run\nROUNDS: 1  # one is enough\nSAMPLES_PER_ROUND: 4\n"
_CSI = re.compile(r"\x1b\[([0-9;?]*)[ -/]*([@-~])")


class Screen:
    """Just enough of a VT100 to read what prompt_toolkit draws; keeps the lines scrolled off the top."""

    def __init__(self, rows: int, cols: int) -> None:
        self.rows, self.cols = rows, cols
        self.grid = [[" "] * cols for _ in range(rows)]
        self.history: list[str] = []
        self.r = self.c = 0
        self.pending = ""
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, data: bytes) -> bytes:
        """Apply output; returns what a terminal would answer (cursor position reports)."""
        text, answer = self.pending + self.decoder.decode(data), b""
        self.pending, i = "", 0
        while i < len(text):
            ch = text[i]
            if ch == "\x1b":
                match = _CSI.match(text, i)
                if match:
                    if match.group(2) == "n" and match.group(1) == "6":
                        answer += f"\x1b[{self.r + 1};{self.c + 1}R".encode()
                    self._csi(match.group(1), match.group(2))
                    i = match.end()
                    continue
                end = text.find("\x07", i) if text.startswith("\x1b]", i) else i + 2
                if end < 0 or end > len(text):
                    self.pending = text[i:]  # an incomplete sequence: wait for the rest
                    break
                i = end + 1 if text.startswith("\x1b]", i) else end
                continue
            self._char(ch)
            i += 1
        return answer

    def _char(self, ch: str) -> None:
        if ch == "\r":
            self.c = 0
        elif ch == "\n":
            self._line_feed()
        elif ch == "\b":
            self.c = max(0, self.c - 1)
        elif ch >= " ":
            self.grid[self.r][min(self.c, self.cols - 1)] = ch
            self.c = min(self.c + 1, self.cols - 1)

    def _line_feed(self) -> None:
        if self.r == self.rows - 1:
            self.history.append("".join(self.grid.pop(0)).rstrip())
            self.grid.append([" "] * self.cols)
        else:
            self.r += 1

    def _csi(self, params: str, final: str) -> None:
        if params.startswith("?"):
            return
        args = [int(p) if p else 0 for p in params.split(";")] if params else []
        n = max(1, args[0]) if args else 1
        if final == "A":
            self.r = max(0, self.r - n)
        elif final == "B":
            self.r = min(self.rows - 1, self.r + n)
        elif final == "C":
            self.c = min(self.cols - 1, self.c + n)
        elif final == "D":
            self.c = max(0, self.c - n)
        elif final == "G":
            self.c = min(self.cols - 1, n - 1)
        elif final in "Hf":
            self.r = min(self.rows - 1, (args[0] if args else 1) - 1)
            self.c = min(self.cols - 1, (args[1] if len(args) > 1 else 1) - 1)
        elif final == "K":
            mode = args[0] if args else 0
            row = self.grid[self.r]
            start, stop = {0: (self.c, self.cols), 1: (0, self.c + 1)}.get(mode, (0, self.cols))
            row[start:stop] = [" "] * (stop - start)
        elif final == "J":
            mode = args[0] if args else 0
            self._csi("", "K")
            rows = range(self.r + 1, self.rows) if mode == 0 else range(self.rows)
            for r in rows:
                self.grid[r] = [" "] * self.cols

    def text(self) -> str:
        return "\n".join(self.history + ["".join(row).rstrip() for row in self.grid])

    def visible(self) -> str:
        return "\n".join("".join(row).rstrip() for row in self.grid)


class MenuPty:
    """``autotrain-menu`` on a pseudo-terminal of 50x160."""

    def __init__(self, home: Path, env: dict[str, str] | None = None, args: tuple[str, ...] = ()) -> None:
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 160, 0, 0))
        full_env = dict(os.environ, LANG="C.UTF-8", LC_ALL="C.UTF-8", TERM="xterm", **(env or {}))
        self.proc = subprocess.Popen(
            [*MENU, "--home", str(home), *args],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=full_env,
            start_new_session=True,
            close_fds=True,
        )
        os.close(slave)
        self.master = master
        self.screen = Screen(50, 160)

    def pump(self, timeout_s: float) -> None:
        ready, _, _ = select.select([self.master], [], [], timeout_s)
        if ready:
            try:
                data = os.read(self.master, 65536)
            except OSError:  # EIO: the child closed the terminal
                return
            answer = self.screen.feed(data)
            if answer:
                os.write(self.master, answer)

    def wait_for(self, predicate: Callable[[str], bool], what: str, timeout_s: float = 20.0) -> str:
        deadline = time.monotonic() + timeout_s
        while True:
            text = self.screen.text()
            if predicate(text):
                return text
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; screen:\n{self.screen.visible()}")
            self.pump(min(0.1, max(0.0, deadline - time.monotonic())))

    def expect(self, needle: str, *, times: int = 1, timeout_s: float = 20.0) -> str:
        """Wait until ``needle`` has been shown at least ``times`` times in all."""
        return self.wait_for(lambda text: text.count(needle) >= times, f"{needle!r} x{times}", timeout_s)

    def count(self, needle: str) -> int:
        return self.screen.text().count(needle)

    def send(self, keys: str) -> None:
        os.write(self.master, keys.encode())

    def choose(self, option: str) -> None:
        """Pick a menu option once the menu prompt is showing (counting prompts shown so far)."""
        shown = self.count("Select [1-9]:")
        self.expect("Select [1-9]:", times=max(1, shown))
        self.send(option + "\r")

    def close(self) -> int | None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        os.close(self.master)
        return self.proc.returncode

    def wait_exit(self, timeout_s: float = 15.0) -> int:
        deadline = time.monotonic() + timeout_s
        while self.proc.poll() is None and time.monotonic() < deadline:
            self.pump(0.1)
        assert self.proc.poll() is not None, f"menu did not exit; screen:\n{self.screen.visible()}"
        return self.proc.returncode


@pytest.fixture
def menu_pty(home: Path) -> Iterator[Callable[..., MenuPty]]:
    started: list[MenuPty] = []

    def start(env: dict[str, str] | None = None, args: tuple[str, ...] = ()) -> MenuPty:
        started.append(MenuPty(home, env, args))
        return started[-1]

    yield start
    for menu in started:
        menu.close()


@pytest.fixture
def detached(home: Path) -> Iterator[None]:
    """Shuts down a supervisor the menu started in the background (not our child) after the test."""
    yield
    try:
        info = read_bus_info(home)
    except ConnectionFileError:
        return
    try:
        with ControlClient(info, timeout_s=5) as client:
            client.call("shutdown")
    except BusError:
        pass
    try:
        wait_until(lambda: not pid_alive(info.pid), 30, 0.05, "detached supervisor exit")
    except AssertionError:
        os.kill(info.pid, signal.SIGKILL)
        raise


@pytest.fixture
def unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def run_menu(
    home: Path, *args: str, env: dict[str, str] | None = None, timeout_s: float = 60
) -> subprocess.CompletedProcess[str]:
    """The menu as a script runs it: no terminal, stdin closed."""
    return subprocess.run(
        [*MENU, "--home", str(home), *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env=dict(os.environ, **(env or {})),
        check=False,
    )


# -- flags, without a terminal -----------------------------------------------------------------------
