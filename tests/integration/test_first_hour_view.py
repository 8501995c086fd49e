"""The dashboard, ``--status`` and HTTP ``/status`` of a home with no live supervisor (issue 28, points 2,
4 and 7): real supervisors, a real terminal (tmux), real files.

An empty home says how to start a run; a home whose supervisor shut down shows its newest run from its
files; one whose supervisor was killed shows the run interrupted with the resume hint in every viewer;
a new supervisor is followed live; a finished run's elapsed time is its duration in ``--list``.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import pytest
from harness import HttpProc, SupervisorProc, agent_env, scripted, wait_until
from menu_driver import run_menu
from tmux_pane import DASH, Pane

from heidi_engine.bus.ledger import stored_state
from heidi_engine.bus.summary import duration_s
from heidi_engine.ui.dashboard.screen import elapsed_s
from heidi_engine.ui.dashboard.source import ReplaySource

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")


def _once(home: Path) -> subprocess.CompletedProcess[str]:
    env = {"COLUMNS": "120", "PATH": "/usr/bin:/bin"}
    return subprocess.run([*DASH, "--home", str(home), "--once"], capture_output=True, text=True, timeout=60, env=env)


def test_a_home_without_a_supervisor_shows_its_newest_run_and_follows_a_new_supervisor(
    home: Path, start_supervisor: Callable[..., SupervisorProc], pane: Callable[..., Pane]
) -> None:
    empty = _once(home)
    assert empty.returncode == 0, empty.stderr
    assert f"no run in {home} yet; autotrain-menu --start starts one" in empty.stdout, empty.stdout
    assert "supervisor not running" in empty.stdout and "shut down" not in empty.stdout

    dash = pane("--home", str(home))
    dash.wait(("no run in", "supervisor not running · waiting for one"))
    sup = start_supervisor(env=agent_env(scripted("--events", "6")), config="ROUNDS: 1\n")
    sup.wait_ready()
    run_id = sup.call("start")["run_id"]
    status = sup.wait_status("completed")
    dash.wait((run_id, "● live", "COMPLETED"), timeout_s=15)
    sup.stop()
    text = dash.wait(("supervisor not running (shut down)", f"runs/{run_id} from its files", "COMPLETED"))
    assert "no run yet" not in text

    shown = _once(home)
    assert shown.returncode == 0, shown.stderr
    assert run_id in shown.stdout and "COMPLETED" in shown.stdout and "supervisor not running" in shown.stdout
    counters = dict(re.findall(r"│ (teacher_generated|validated_ok)\s+([\d,]+)\s", shown.stdout))
    assert counters == {k: f"{status['counters'][k]:,}" for k in ("teacher_generated", "validated_ok")}, shown.stdout

    # Point 7: the replayed run's clock stands still at the duration --list shows.
    folder = home / "runs" / run_id
    replayed = ReplaySource(folder, f"runs/{run_id}").read().state
    stored = stored_state(folder)
    assert stored is not None
    listed = duration_s(stored)
    assert listed is not None
    far = datetime(2100, 1, 1, tzinfo=timezone.utc)
    assert abs((elapsed_s(replayed, far) or -1.0) - listed) <= 0.1


def test_a_killed_supervisors_run_reads_interrupted_in_every_viewer(
    home: Path,
    start_supervisor: Callable[..., SupervisorProc],
    http_server: Callable[[], HttpProc],
    pane: Callable[..., Pane],
) -> None:
    agents = agent_env(scripted("--events", "3000", "--delay", "0.02"))
    sup = start_supervisor(env=agents, config="ROUNDS: 1\n")
    sup.wait_ready()
    run_id = sup.call("start")["run_id"]
    wait_until(lambda: sup.status()["current_stage"] == "generate", 20, what="generate running")
    http = http_server()
    wait_until(lambda: http.get("/status").json()["status"] == "running", 10, 0.05, "HTTP shows the run")
    dash = pane("--home", str(home))
    dash.wait((run_id, "● live", "generate:running"), timeout_s=15)

    sup.kill9()
    hint = f"autotrain-menu --resume-run {run_id} continues it"
    text = dash.wait(("INTERRUPTED", "supervisor not running (its process exited)", hint), timeout_s=5)
    assert "generate:running" not in text and "RUNNING" not in text
    body = wait_until(lambda: (b := http.get("/status").json())["status"] == "interrupted" and b, 5, 0.05,
                      "HTTP /status shows the run interrupted")
    assert str(body["health"]).startswith("down")
    status = run_menu(home, "--status")
    assert run_id in status.stdout and "interrupted" in status.stdout and "running" not in status.stdout, status.stdout
    assert hint in status.stdout, status.stdout

    again = start_supervisor(env=agents, config="ROUNDS: 1\n")
    again.wait_ready()
    text = dash.wait(("● live", run_id, "INTERRUPTED"), timeout_s=15)
    assert "supervisor not running" not in text
    again.stop()
