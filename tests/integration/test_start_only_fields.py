"""A start that overrides what only the supervisor's own start reads (HTTP_ENABLED, HTTP_PORT) is refused,
saying where to set it: by ``autotrain-menu --start`` before any supervisor is started, and by a running
supervisor's ``start`` command, whoever sends it."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from harness import SupervisorProc, agent_env, scripted

from heidi_engine.bus.control import CommandRefused
from heidi_engine.bus.exit_status import EXIT_BAD_USAGE

MENU = [sys.executable, "-m", "heidi_engine.ui.menu_cli"]

pytestmark = pytest.mark.timeout(60)


def test_the_menu_refuses_before_starting_anything(home: Path) -> None:
    done = subprocess.run([*MENU, "--home", str(home), "--start", "--set", "HTTP_ENABLED=1", "--set", "HTTP_PORT=7790"],
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert done.returncode == EXIT_BAD_USAGE, done
    for field in ("HTTP_ENABLED", "HTTP_PORT"):
        assert (f"start refused: {field} is read when the supervisor starts, not by a run: set it in config.yaml or "
                f"AUTOTRAIN_{field} and restart the supervisor") in done.stderr, done.stderr  # fmt: skip
    assert not (home / "run" / "bus.json").exists() and not (home / "runs").exists()  # no supervisor, no run


def test_a_running_supervisor_refuses_it_and_starts_nothing(start_supervisor: Callable[..., SupervisorProc]) -> None:
    sup = start_supervisor(env=agent_env(scripted("--events", "0")), config="ROUNDS: 1\n").wait_ready()
    with pytest.raises(CommandRefused, match="HTTP_PORT is read when the supervisor starts"):
        sup.call("start", {"overrides": {"HTTP_PORT": "7790", "ROUNDS": "1"}})
    status = sup.status()
    assert status["status"] == "idle" and status["run_id"] is None
    assert sup.call("start", {"overrides": {"ROUNDS": "1"}})["run_id"]  # the same start without it goes
