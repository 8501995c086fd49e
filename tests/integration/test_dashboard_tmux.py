"""``autotrain-dash`` in a real terminal (a detached tmux pane) against real supervisors.

Each test waits on what the pane shows, polling ``capture-pane`` until a deadline, and kills its own tmux
server (``-L`` with a unique socket name) in a finalizer.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from harness import SupervisorProc, agent_env, scripted, wait_until
from tmux_pane import DASH, Pane

from heidi_engine.bus.event import COUNTER_NAMES

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")

StartSupervisor = Callable[..., SupervisorProc]


def screen_counters(text: str) -> dict[str, int]:
    """The pipeline counters as the Overview shows them."""
    found = re.findall(r"│ (\w+)\s+([\d,]+)\s", text)
    return {name: int(value.replace(",", "")) for name, value in found if name in COUNTER_NAMES}


def event_rows(text: str) -> list[str]:
    return [line for line in text.splitlines() if re.match(r"│ \d\d:\d\d:\d\d\.\d{3} ", line)]


def exited_cleanly(pane: Pane) -> None:
    """The dashboard process ended with 0 and left the terminal in its normal (cooked, echoing) mode."""
    text = pane.wait("dash exited rc=", 10)
    assert "dash exited rc=0" in text, text
    flags = set(pane.wait("icanon", 5).split())
    assert {"icanon", "echo", "isig"} <= flags and "-icanon" not in flags and "-echo" not in flags


def test_mid_run_join_views_keys_scrolling_filter_and_quit(
    home: Path, start_supervisor: StartSupervisor, pane: Callable[..., Pane]
) -> None:
    sup = start_supervisor(
        env=agent_env(scripted("--events", "400", "--delay", "0.02")), config="ROUNDS: 1\n"
    )
    sup.wait_ready()
    run_id = sup.call("start")["run_id"]
    wait_until(lambda: sup.status()["counters"]["teacher_generated"] >= 30, 20, 0.05, "a run under way")

    dash = pane("--home", str(home))
    dash.wait(run_id)
    dash.wait("● live")
    sup.call("pause")
    status = sup.wait_status("paused")

    # The counters stop at the pause; the dashboard must show exactly what `status` says at that seq.
    def matches_status(text: str) -> bool:
        seq = re.search(r"seq ([\d,]+)", text)
        return (
            bool(seq)
            and int(seq.group(1).replace(",", "")) >= status["seq"]
            and (screen_counters(text) == status["counters"])
        )

    text = dash.wait(matches_status)
    assert "PAUSED" in text and "pause requested" in text

    dash.key("2", ("╭─ Teacher", "requests sent", "estimated cost"))
    dash.key("3", ("╭─ Training", "Host (no GPU)", "no training step yet"))
    dash.key("5", ("╭─ Configuration", "ROUNDS", "TEACHER_API_KEY_ENV"))
    dash.key("?", "╭─ Help")
    dash.key("?", "╭─ Configuration")
    dash.key("1", "╭─ Pipeline")

    text = dash.key("4", "· following")
    first, last, total = (
        int(n.replace(",", "")) for n in re.findall(r"Events ([\d,]+)–([\d,]+) of ([\d,]+)", text)[0]
    )
    page = last - first + 1
    assert total > page  # enough events to scroll
    dash.key("g", "Events 1–")
    dash.key("j", "Events 2–")
    dash.key("k", "Events 1–")
    dash.key("NPage", f"Events {min(1 + page, total - page + 1)}–")
    dash.key("PPage", "Events 1–")
    dash.key("End", "· following")
    dash.key("Up", "· scrolled")
    dash.key("Down", "· following")
    dash.key("Home", "Events 1–")
    dash.key("G", "· following")

    dash.press("/")
    dash.wait("filter / ")
    dash.type("item 1")
    dash.wait("filter / item 1")
    dash.key("Enter", lambda t: "filter “item 1”" in t and "╰" in t and event_rows(t))
    rows = event_rows(dash.text())
    assert rows and all("item 1" in row for row in rows)
    dash.press("/")
    dash.wait(("filter / █", "in force: item 1"))  # a new filter is typed afresh
    dash.type("zz")
    dash.wait("filter / zz")
    text = dash.key("Escape", lambda t: "filter / " not in t and "q quit" in t)
    assert "filter “item 1”" in text and "zz" not in text

    dash.press("q")
    exited_cleanly(dash)


def test_killed_supervisor_is_reported_and_a_new_one_is_followed(
    home: Path, start_supervisor: StartSupervisor, pane: Callable[..., Pane]
) -> None:
    agents = agent_env(scripted("--events", "2000", "--delay", "0.01"))
    first = start_supervisor(env=agents, config="ROUNDS: 1\n")
    first.wait_ready()
    first_run = first.call("start")["run_id"]
    dash = pane("--home", str(home))
    dash.wait(lambda t: first_run in t and "● live" in t)

    first.kill9()
    killed = time.monotonic()
    dash.wait("supervisor not running (its process exited)", timeout_s=3.0)
    assert time.monotonic() - killed <= 3.0
    text = dash.wait(("INTERRUPTED", f"--resume-run {first_run}"))
    assert first_run in text and "RUNNING" not in text  # the run its files show, interrupted, not as running

    second = start_supervisor(env=agents, config="ROUNDS: 1\n")
    second.wait_ready()
    second_run = second.call("start")["run_id"]
    assert second_run != first_run
    text = dash.wait(lambda t: second_run in t and "● live" in t, timeout_s=15)
    assert "not reachable" not in text
    second.stop()  # a clean shutdown reads differently from a crash
    text = dash.wait(("supervisor not running (shut down)", f"runs/{second_run} from its files"))
    assert "not reachable" not in text and "SUPERVISOR DOWN" not in text
    os.kill(dash.dashboard_pid(), signal.SIGTERM)  # as a service manager or `kill` would
    exited_cleanly(dash)


def _dash(*args: str, columns: int = 120) -> subprocess.CompletedProcess[str]:
    env = {"COLUMNS": str(columns), "PATH": "/usr/bin:/bin"}
    return subprocess.run([*DASH, *args], capture_output=True, text=True, timeout=60, env=env)


def test_once_live_then_replay_of_the_finished_run_and_usage_errors(
    home: Path, start_supervisor: StartSupervisor
) -> None:
    sup = start_supervisor(env=agent_env(scripted("--events", "6")), config="ROUNDS: 1\n")
    sup.wait_ready()
    run_id = sup.call("start")["run_id"]
    status = sup.wait_status("completed")
    assert status["counters"]["teacher_generated"] > 0

    live = _dash("--home", str(home), "--once")
    assert live.returncode == 0, live.stderr
    assert run_id in live.stdout and "COMPLETED" in live.stdout and "● live" in live.stdout
    assert screen_counters(live.stdout) == status["counters"]

    sup.stop()
    gone = _dash("--home", str(home), "--once")
    assert gone.returncode == 0 and "supervisor not running" in gone.stdout and run_id in gone.stdout, gone.stderr

    replayed = _dash("--home", str(home), "--run", run_id, "--once")
    assert replayed.returncode == 0, replayed.stderr
    assert f"replay of runs/{run_id}" in replayed.stdout and "COMPLETED" in replayed.stdout
    assert screen_counters(replayed.stdout) == status["counters"]
    config = _dash("--home", str(home), "--run", run_id, "--once", "--view", "5")
    assert config.returncode == 0 and "ROUNDS" in config.stdout

    for args, message in (
        (["--run", "../../etc", "--once"], "is not a run id"),
        (["--run", "run_20990101_000000_deadbeef", "--once"], "no run run_20990101_000000_deadbeef"),
        (["--refresh", "0", "--once"], "--refresh 0 is out of range"),
        (["--view", "9", "--once"], "invalid choice"),
        ([], "needs a terminal"),
    ):
        bad = _dash("--home", str(home), *args)
        assert bad.returncode == 2 and message in bad.stderr, (args, bad.stderr)
    missing = _dash("--home", str(home / "nope"), "--once")
    assert missing.returncode == 2 and f"home {home / 'nope'} does not exist" in missing.stderr, missing.stderr


def test_pause_unpause_and_stop_with_confirmation_from_the_dashboard(
    home: Path, start_supervisor: StartSupervisor, pane: Callable[..., Pane]
) -> None:
    sup = start_supervisor(
        env=agent_env(scripted("--events", "2000", "--delay", "0.02")), config="ROUNDS: 1\n"
    )
    sup.wait_ready()
    run_id = sup.call("start")["run_id"]
    dash = pane("--home", str(home))
    dash.wait((run_id, "● live", "p pause · u unpause · s stop"))
    dash.key("Tab", "╭─ Teacher")
    dash.key("Right", "╭─ Training")
    dash.key("Left", "╭─ Teacher")
    dash.key("BTab", "╭─ Pipeline")
    dash.key("Left", lambda t: "╭─ Pipeline" not in t and "╭─ " in t)  # wraps around to the last view
    dash.key("Right", "╭─ Pipeline")

    dash.key("p", "pause requested")
    sup.wait_status("paused")
    dash.wait("PAUSED")
    dash.key("u", "unpaused")
    sup.wait_status("running")

    dash.key("s", "stop the run at its next stage boundary? y/n")
    dash.key("n", "stop cancelled")
    assert sup.status()["status"] == "running" and not sup.status()["stop_requested"]
    dash.key("s", "? y/n")
    dash.key("y", "stop requested")
    sup.wait_status("stopped")
    dash.wait("STOPPED")
    dash.press("q")
    exited_cleanly(dash)
