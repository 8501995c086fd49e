"""The first hour in a home of one's own (issue 28, points 1, 3, 11 and 12): a home without config.yaml
that says what it lacks, ``--init``, a fatal agent error that is the last line of its log, homes that
cannot be used, the flags named in messages, ``--logs`` of one run and a bad ``$AUTOTRAIN_BUS``."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from harness import SupervisorProc, agent_env, pid_alive, scripted, wait_until
from menu_driver import MENU

from heidi_engine.bus.errors import CommandRefused

Start = Callable[..., SupervisorProc]
SUPERVISOR = [sys.executable, "-m", "heidi_engine.supervisor.cli"]
REPO = Path(__file__).resolve().parents[2]
QUICK = scripted("--events", "3", "--delay", "0.01")
SLOW = scripted("--events", "400", "--delay", "0.05")


def _bare_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """This environment without a teacher key or a model cache: what a new user's shell has."""
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "AUTOTRAIN_BUS", "HF_HUB_CACHE")
           and not k.startswith("AUTOTRAIN_")}
    env["HF_HOME"] = str(tmp_path / "hf")
    env.update(extra)
    return env


def _run(argv: list[str], env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout,
                          env=env, check=False)


def test_start_without_config_yaml_refuses_naming_what_is_missing(tmp_path: Path, home: Path) -> None:
    fresh = home / "new"  # missing: --start makes it (0700), then refuses the defaults
    done = _run([*MENU, "--home", str(fresh), "--start", "--rounds", "1", "--samples", "4"], _bare_env(tmp_path))
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "OPENAI_API_KEY" in done.stderr and "not in the local cache" in done.stderr, done.stderr
    assert f"autotrain-menu --init {fresh}" in done.stderr, done.stderr
    assert "started run" not in done.stdout and not (fresh / "run" / "bus.json").exists()
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o700


def test_the_supervisors_start_command_refuses_unrunnable_defaults(
    start_supervisor: Start, tmp_path: Path
) -> None:
    sup = start_supervisor(env=_bare_env(tmp_path, **agent_env(validate=QUICK))).wait_ready()
    with pytest.raises(CommandRefused, match=r"OPENAI_API_KEY.*not in the local cache.*--init"):
        sup.call("start")


def test_detached_supervisor_log_says_config_yaml_is_missing(home: Path) -> None:
    done = _run([*SUPERVISOR, "--home", str(home), "--detach", "--no-gpu"])
    assert done.returncode == 0, (done.stdout, done.stderr)
    pid = json.loads((home / "run" / "bus.json").read_text())["pid"]
    try:
        assert "no config.yaml in" in (home / "supervisor.log").read_text()
    finally:
        os.kill(pid, signal.SIGTERM)
        wait_until(lambda: not pid_alive(pid), 30, 0.05, "the detached daemon to exit")


def test_init_writes_the_shipped_offline_profile_once(home: Path) -> None:
    target = home / "mine"
    done = _run([*MENU, "--init", str(target)])
    assert done.returncode == 0, (done.stdout, done.stderr)
    written = target / "config.yaml"
    assert written.read_bytes() == (REPO / "config.yaml").read_bytes()
    assert stat.S_IMODE(written.stat().st_mode) == 0o600 and stat.S_IMODE(target.stat().st_mode) == 0o700
    written.write_text("ROUNDS: 3\n")
    again = _run([*MENU, "--home", str(target), "--init"])
    assert again.returncode == 1 and "already exists" in again.stderr, (again.stdout, again.stderr)
    assert written.read_text() == "ROUNDS: 3\n"


def test_a_fatal_agent_error_is_the_last_line_of_its_log_status_and_logs(
    start_supervisor: Start, tmp_path: Path, home: Path
) -> None:
    env = _bare_env(tmp_path, **agent_env(QUICK, generate=""))
    env.pop("AUTOTRAIN_AGENT_GENERATE")  # the real generate agent, with no key for its teacher
    sup = start_supervisor(env=env, config="ROUNDS: 1\nTEACHER_MODEL: gpt-4o-mini\n").wait_ready()
    run_id = sup.call("start")["run_id"]
    sup.wait_status("failed", timeout_s=120)
    log = home / "runs" / run_id / "logs" / "generate_round_1.log"
    last = log.read_text().strip().splitlines()[-1]
    assert "no API key" in last and "OPENAI_API_KEY" in last, last
    status = _run([*MENU, "--home", str(home), "--status"], env)
    assert "no API key" in status.stdout + status.stderr, status.stdout + status.stderr
    logs = _run([*MENU, "--home", str(home), "--logs", "--stage", "generate"], env)
    assert logs.returncode == 0 and "no API key" in logs.stdout.strip().splitlines()[-1], logs.stdout


@pytest.mark.parametrize("argv", [
    [*MENU, "--home", "/sys", "--start"],
    [*MENU, "--home", "/proc/autotrain", "--start"],
    [*SUPERVISOR, "--home", "/sys", "--detach", "--no-gpu"],
    [*SUPERVISOR, "--home", "/proc", "--no-gpu"],
    [*MENU, "--home", "/sys", "--init"],
])
def test_a_home_that_cannot_be_created_or_written_is_one_line(argv: list[str]) -> None:
    began = time.monotonic()
    done = _run(argv)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert time.monotonic() - began < 20
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr and "supervisor.log" not in done.stderr, lines
    assert argv[argv.index("--home") + 1] in lines[0] and ("cannot" in lines[0]), lines[0]


@pytest.mark.parametrize("action", ["--status", "--list", "--logs"])
def test_a_missing_home_is_named_by_the_commands_that_only_read(home: Path, action: str) -> None:
    missing = home / "nowhere"
    done = _run([*MENU, "--home", str(missing), action])
    assert done.returncode == 2 and f"home {missing} does not exist" in done.stderr, (done.stdout, done.stderr)
    assert not missing.exists()


def test_messages_name_the_resume_run_flag(start_supervisor: Start, home: Path) -> None:
    sup = start_supervisor(env=agent_env(SLOW), config="ROUNDS: 1\n").wait_ready()
    run_id = sup.call("start")["run_id"]
    wait_until(lambda: sup.status()["current_stage"] == "generate", 20, what="generate running")
    sup.call("stop")
    sup.wait_status("stopped")
    events = (home / "runs" / run_id / "events.jsonl").read_text()
    assert "autotrain-menu --resume-run continues it" in events and "; resume_run continues" not in events
    refused = _run([*MENU, "--home", str(home), "--resume-run", "run_20200101_000000_0123abcd"])
    assert refused.returncode == 1 and "--resume-run refused:" in refused.stderr, refused.stderr
    assert "resume_run refused" not in refused.stderr


def test_logs_of_the_newest_run_print_only_its_part_of_the_supervisor_log(home: Path) -> None:
    old, new = "run_20260101_000000_0123abcd", "run_20260102_000000_89abcdef"
    for run in (old, new):
        (home / "runs" / run / "logs").mkdir(parents=True)
    (home / "supervisor.log").write_text(
        f"serving\n{old} · round 0 · pipeline started\nold detail\n{old} · pipeline completed\n"
        f"between runs\n{new} · round 0 · pipeline started\nnew detail\n"
    )
    done = _run([*MENU, "--home", str(home), "--logs"])
    assert done.returncode == 0, done.stderr
    assert old not in done.stdout and "old detail" not in done.stdout and "between runs" not in done.stdout
    assert f"{new} · round 0 · pipeline started" in done.stdout and "new detail" in done.stdout, done.stdout
    older = _run([*MENU, "--home", str(home), "--logs", "--run", old])
    assert "old detail" in older.stdout and "new detail" not in older.stdout, older.stdout


def test_a_bad_bus_file_is_bad_usage_by_flag_and_by_variable(home: Path) -> None:
    bad = home / "nope.bus.json"
    by_flag = _run([*MENU, "--home", str(home), "--bus", str(bad), "--status"])
    by_env = _run([*MENU, "--home", str(home), "--status"], {**os.environ, "AUTOTRAIN_BUS": str(bad)})
    for done in (by_flag, by_env):
        assert done.returncode == 2 and str(bad) in done.stderr, (done.returncode, done.stderr)
