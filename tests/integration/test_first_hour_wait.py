"""`autotrain-menu --wait` whose supervisor dies (kill -9) says the run is interrupted and how to go on."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from harness import SupervisorProc, agent_env, scripted


def test_wait_that_loses_its_supervisor_prints_the_resume_hint(home: Path) -> None:
    sup = SupervisorProc(home, env=agent_env(scripted("--events", "100000", "--delay", "0.05"))).wait_ready()
    try:
        run_id = sup.call("start")["run_id"]
        sup.wait_status("running")
        follower = subprocess.Popen([sys.executable, "-m", "heidi_engine.ui.menu_cli", "--home", str(home), "--wait"],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
        try:
            # The follower is following once it has printed its first line (the run's first state).
            assert follower.stdout is not None
            first = follower.stdout.readline()
            assert run_id in first, first
            sup.kill9()
            out, err = follower.communicate(timeout=60)
        finally:
            if follower.poll() is None:
                follower.kill()
        assert follower.returncode == 1, (follower.returncode, out, err)
        assert f"lost the supervisor while following {run_id}" in err, err
        assert f"the run is interrupted; autotrain-menu --resume-run {run_id} continues it" in err, err
    finally:
        sup.stop()
