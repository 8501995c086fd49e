"""Several `--start` at once on a home with no supervisor: one supervisor, one run, nothing stopped, and
every caller told the truth."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import psutil
from harness import pid_alive, wait_until
from menu_driver import CONFIG, MENU, SLOW_AGENT

from heidi_engine.bus.connection import ConnectionFileError, read_bus_info
from heidi_engine.bus.control import ControlClient
from heidi_engine.bus.errors import BusError

CALLERS = 6
REPEATS = 20


def supervisors_of(home: Path) -> list[int]:
    return [p.pid for p in psutil.process_iter(["cmdline"])
            if p.info["cmdline"] and "heidi_engine.supervisor.cli" in p.info["cmdline"] and str(home) in p.info["cmdline"]]


def shut_down(home: Path) -> None:
    for pid in supervisors_of(home):
        try:
            info = read_bus_info(home)
            with ControlClient(info, timeout_s=5) as client:
                client.call("shutdown")
            wait_until(lambda pid=pid: not pid_alive(pid), 30, 0.05, "the supervisor's exit")
        except (BusError, ConnectionFileError, AssertionError):
            os.kill(pid, signal.SIGKILL)


def test_six_concurrent_starts_make_one_supervisor_and_one_run_and_stop_nothing() -> None:
    for attempt in range(REPEATS):
        home = Path(tempfile.mkdtemp(prefix="at-", dir="/tmp"))
        callers: list[subprocess.Popen[str]] = []
        try:
            (home / "config.yaml").write_text(CONFIG)
            env = {**os.environ, **SLOW_AGENT}
            callers = [subprocess.Popen([*MENU, "--home", str(home), "--start"], env=env, stdin=subprocess.DEVNULL,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                       for _ in range(CALLERS)]
            said = [(c.wait(120), *c.communicate()) for c in callers]
            evidence = f"attempt {attempt}: " + "\n".join(f"exit {code}: {out.strip()} | {err.strip()}" for code, out, err in said)
            started_run = [s for s in said if s[0] == 0 and "started run" in s[1]]
            assert len(started_run) == 1, evidence
            assert not any("stopped the supervisor" in out + err for _, out, err in said), evidence
            for entry in said:
                if entry is not started_run[0]:
                    assert entry[0] != 0 and "already running" in entry[2], evidence  # told that run is active
            assert len(supervisors_of(home)) == 1, evidence
            runs = [p.name for p in (home / "runs").iterdir()]
            assert len(runs) == 1 and runs[0] in started_run[0][1], (runs, evidence)
            info = read_bus_info(home)
            with ControlClient(info, timeout_s=10) as client:
                status = client.call("status")
            assert status["status"] in ("starting", "running") and status["run_id"] == runs[0], (status, evidence)
        finally:
            for caller in callers:  # a caller that hung past its wait is not left behind
                if caller.poll() is None:
                    caller.kill()
                    caller.wait()
            shut_down(home)
            shutil.rmtree(home, ignore_errors=True)
