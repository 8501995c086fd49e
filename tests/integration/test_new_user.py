"""What a new user meets first, end to end: the daemon's own lines, following a run, refused commands,
and a run a crashed supervisor left behind."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from harness import SupervisorProc, agent_env, pid_alive, scripted, wait_until
from menu_driver import CONFIG, MENU, QUICK_AGENT, SLOW_AGENT, MenuPty, run_menu

from heidi_engine.bus.journal import read_events

Start = Callable[..., SupervisorProc]
DASH = [sys.executable, "-m", "heidi_engine.ui.dash_cli"]


def test_foreground_supervisor_says_what_the_run_does_and_how_ctrl_c_stops(start_supervisor: Start, home: Path) -> None:
    sup = start_supervisor(env=agent_env(scripted("--events", "400", "--delay", "0.05"))).wait_ready()
    assert "no config.yaml in" in sup.output() and str(home / "runs") in sup.output(), sup.output()
    run_id = sup.call("start")["run_id"]
    wait_until(lambda: f"{run_id} · round 1 · generate started" in sup.output(), 20, 0.05, "a stage line")
    assert f"{run_id} · round 0 · pipeline started" in sup.output(), sup.output()
    sup.proc.send_signal(signal.SIGINT)
    wait_until(lambda: "Ctrl-C again to stop now" in sup.output(), 10, 0.05, "the stop line")
    assert "stopping the run at the next stage boundary" in sup.output()
    sup.proc.send_signal(signal.SIGINT)
    assert sup.proc.wait(30) == 0, sup.output()
    assert "received SIGINT again: stopping now" in sup.output(), sup.output()
    assert "· pipeline stopped (fast shutdown)" in sup.output(), sup.output()


def test_sighup_stops_a_foreground_supervisor_cleanly(start_supervisor: Start, home: Path) -> None:
    """The terminal going away stops the run as SIGTERM does: a clean stop, a state that says so."""
    sup = start_supervisor(env=agent_env(scripted("--events", "400", "--delay", "0.05"))).wait_ready()
    run_id = sup.call("start")["run_id"]
    sup.wait_status("running")
    sup.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: "received SIGHUP" in sup.output(), 10, 0.05, "the stop line", sup.evidence)
    sup.proc.send_signal(signal.SIGHUP)
    assert sup.proc.wait(30) == 0, sup.output()
    state = json.loads((home / "runs" / run_id / "state.json").read_text())
    assert state["status"] == "stopped", state["status"]


def test_detach_prints_the_daemon_pid_and_its_log(home: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "heidi_engine.supervisor.cli", "--home", str(home), "--detach", "--no-gpu"],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60, check=False,
    )
    found = re.search(r"running in the background \(pid (\d+)\); log: (\S+)", done.stdout)
    assert done.returncode == 0 and found, (done.returncode, done.stdout, done.stderr)
    pid = int(found.group(1))
    try:
        assert found.group(2) == str(home / "supervisor.log")
        assert json.loads((home / "run" / "bus.json").read_text())["pid"] == pid
        os.kill(pid, signal.SIGHUP)  # no terminal to lose: a stray SIGHUP changes nothing
        status = run_menu(home, "--status", "--json")
        assert status.returncode == 0 and pid_alive(pid), (status.stdout, status.stderr)
    finally:
        os.kill(pid, signal.SIGTERM)
        wait_until(lambda: not pid_alive(pid), 30, 0.05, "the detached daemon to exit")


def test_resume_run_without_a_resumable_run_starts_no_daemon(home: Path) -> None:
    done = run_menu(home, "--resume-run")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "no stopped, interrupted or failed run" in done.stderr
    assert "started autotrain-supervisor" not in done.stdout
    assert not (home / "run" / "bus.json").exists(), "no supervisor may be left running"
    missing = run_menu(home, "--resume-run", "run_20260101_000000_0123abcd")
    assert missing.returncode == 1 and "no run run_20260101_000000_0123abcd" in missing.stderr
    assert not (home / "run" / "bus.json").exists()


def test_start_wait_says_the_daemon_stays_and_how_to_stop_it(home: Path, detached: None) -> None:
    (home / "config.yaml").write_text(CONFIG)
    done = run_menu(home, "--start", "--wait", env=QUICK_AGENT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"the supervisor \(pid \d+\) keeps running on .*; autotrain-menu --shutdown stops it",
                     done.stdout), done.stdout


def test_ctrl_c_while_following_leaves_the_run_going_and_wait_alone_follows(
    start_supervisor: Start, home: Path
) -> None:
    sup = start_supervisor(env=SLOW_AGENT, config=CONFIG).wait_ready()
    run_id = sup.call("start")["run_id"]
    follower = subprocess.Popen([*MENU, "--home", str(home), "--wait"], stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert follower.stdout is not None
        first = follower.stdout.readline()
        assert run_id in first, first + (follower.stderr.read() if follower.poll() is not None and follower.stderr else "")
        assert re.match(r"\[ *(\d+m )?\d+s\] ", first), first  # elapsed time as a duration, not raw seconds
        follower.send_signal(signal.SIGINT)
        out, err = follower.communicate(timeout=30)
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait(5)
    assert follower.returncode == 130, (out, err)
    assert f"stopped following; run {run_id} continues (autotrain-menu --stop to stop it" in err, err
    assert sup.status()["status"] in ("running", "starting"), sup.status()


def test_a_run_left_by_a_killed_supervisor_shows_as_interrupted(
    start_supervisor: Start, home: Path, menu_pty: Callable[..., MenuPty]
) -> None:
    env = agent_env(scripted("--events", "400", "--delay", "0.05"))
    sup = start_supervisor(env=env, config="ROUNDS: 1\n").wait_ready()
    run_id = sup.call("start")["run_id"]
    sup.wait_status("running")
    wait_until(lambda: sup.status()["current_stage"] == "generate", 20, what="generate running")
    sup.kill9()
    again = start_supervisor(env=env).wait_ready()
    status = again.status()
    assert status["run_id"] == run_id and status["status"] == "interrupted", status
    events = list(read_events(home / "runs" / run_id))
    assert events[-1].level == "warn" and "run interrupted" in events[-1].message, events[-1]
    human = run_menu(home, "--status")
    assert human.returncode == 0 and "interrupted" in human.stdout, human.stdout + human.stderr
    assert f"autotrain-menu --resume-run {run_id}" in human.stdout, human.stdout
    frame = subprocess.run([*DASH, "--home", str(home), "--once"], capture_output=True, text=True, timeout=60,
                           check=False)
    assert "INTERRUPTED" in frame.stdout and f"--resume-run {run_id}" in frame.stdout, frame.stdout + frame.stderr
    menu = menu_pty()
    menu.expect(f"{run_id} · interrupted")
    menu.expect(f"autotrain-menu --resume-run {run_id} continues it (option 2 here)")
    menu.choose("9")
    assert menu.wait_exit() == 0
    assert again.call("resume_run")["run_id"] == run_id


def test_a_closed_output_pipe_ends_the_command_quietly(home: Path) -> None:
    for args in (("--list",), ("--help",), ("--list", "--json")):
        read_end, write_end = os.pipe()
        os.close(read_end)  # the reader has gone before anything is written, as `| head -1` often has
        try:
            done = subprocess.run([*MENU, "--home", str(home), *args], stdin=subprocess.DEVNULL,
                                  stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=60, check=False)
        finally:
            os.close(write_end)
        assert done.returncode == 0 and "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr, (
            args, done.returncode, done.stderr)


def test_set_rescues_a_bad_value_in_config_yaml(start_supervisor: Start, home: Path) -> None:
    sup = start_supervisor(env=QUICK_AGENT, config=CONFIG).wait_ready()
    (home / "config.yaml").write_text(CONFIG + "VAL_RATIO: 1.5\n")  # broken after the daemon started
    refused = run_menu(home, "--start")
    assert refused.returncode == 2 and "VAL_RATIO = 1.5" in refused.stderr, refused.stderr
    done = run_menu(home, "--start", "--set", "VAL_RATIO=0.2")
    assert done.returncode == 0 and "started run run_" in done.stdout, done.stdout + done.stderr
    assert "warning:" in done.stderr and "VAL_RATIO = 1.5" in done.stderr and "ignored: override" in done.stderr
    assert sup.call("snapshot")["state"]["config"]["VAL_RATIO"] == 0.2
