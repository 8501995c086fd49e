"""Shell completion in a real bash in a tmux pane: run ids, ``--set`` keys and a field's allowed values."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")

BIN = Path(sys.executable).parent
RUNS = ("run_20240101_000000_0123abcd", "run_20240102_000000_89abcdef")


class Shell:
    """bash (no rc files) in a detached tmux server of its own, with this interpreter's bin first on PATH."""

    def __init__(self) -> None:
        self.socket = f"completion-test-{uuid.uuid4().hex[:10]}"
        env = f"env -i PATH={BIN}:/usr/bin:/bin HOME={Path.home()} TERM=xterm LANG=C.UTF-8"
        self._tmux("-f", "/dev/null", "new-session", "-d", "-x", "200", "-y", "40",
                   f"{env} bash --norc --noprofile", check=True)  # fmt: skip

    def _tmux(self, *args: str, check: bool = False) -> str:
        env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
        return subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True, text=True, check=check,
                              env=env).stdout  # fmt: skip

    def send(self, *keys: str) -> None:
        self._tmux("send-keys", *keys)

    def wait(self, check: Callable[[str], bool], what: str, timeout_s: float = 20.0) -> str:
        deadline = time.monotonic() + timeout_s
        while True:
            text = self._tmux("capture-pane", "-p", "-S", "-40")
            if check(text):
                return text
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; screen:\n{text}")
            time.sleep(0.05)

    def close(self) -> None:
        self._tmux("kill-server")


@pytest.fixture
def shell() -> Iterator[Shell]:
    opened = Shell()
    yield opened
    opened.close()


def test_run_ids_and_set_keys_and_values_complete(home: Path, shell: Shell) -> None:
    for run_id in RUNS:
        (home / "runs" / run_id).mkdir(parents=True)
    shell.send('eval "$(register-python-argcomplete autotrain-menu)"; echo registered', "Enter")
    shell.wait(lambda t: "\nregistered" in t, "the completion to be registered")
    shell.send(f"autotrain-menu --home {home} --logs --run run_2024010", "Tab", "Tab")  # the common prefix: Tab Tab lists
    shell.wait(lambda t: all(run_id in t for run_id in RUNS), "both run ids offered")
    shell.send("C-u", "autotrain-menu --set LORA_", "Tab", "Tab")
    shell.wait(lambda t: "LORA_R=" in t and "LORA_ALPHA=" in t, "the LORA_ fields offered")
    shell.send("C-u", "autotrain-menu --set RUN_UNIT_TESTS=", "Tab", "Tab")
    shell.wait(lambda t: t.rstrip().splitlines()[-2].split() == ["0", "1"], "the values 0 and 1 offered")
