"""autotrain-menu end to end: the interactive menu through a real pty, and the flags as scripts use them.

The pty side feeds everything the menu writes into a small VT100 screen model (cursor moves, erases,
cursor-position reports answered like a terminal), because prompt_toolkit redraws only the cells that
changed: the raw byte stream never holds a re-rendered line whole, the screen does.
"""

from __future__ import annotations

import json
import re
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from harness import SupervisorProc, wait_until
from menu_driver import CONFIG, MENU, QUICK_AGENT, SLOW_AGENT, MenuPty, run_menu

from heidi_engine.bus.config import load_config


def test_no_supervisor_exits_3_for_status_and_control(home: Path) -> None:
    for flag in ("--status", "--stop", "--pause", "--resume"):
        done = run_menu(home, flag)
        assert done.returncode == 3, (flag, done.stderr)
        assert "no supervisor" in done.stderr
    assert not (home / "run").exists(), "nothing may be started by a status query"


def test_bad_overrides_exit_2_with_the_rule_and_start_nothing(home: Path) -> None:
    (home / "config.yaml").write_text(CONFIG)
    done = run_menu(home, "--start", "--set", "ROUNDS=0", "--set", "NOPE=1", "--samples", "many")
    assert done.returncode == 2, done.stderr
    lines = done.stderr.splitlines()
    assert any("ROUNDS" in line and "1–100" in line for line in lines), done.stderr
    assert any("NOPE" in line and "unknown field" in line for line in lines), done.stderr
    assert any("SAMPLES_PER_ROUND" in line and "1–10000" in line for line in lines), done.stderr
    assert not (home / "run").exists() and not (home / "runs").exists()
    usage = run_menu(home, "--status", "--rounds", "2")
    assert usage.returncode == 2 and "--rounds only goes with --config-show or --start" in usage.stderr
    not_a_run = run_menu(home, "--resume-run", "../etc")
    assert not_a_run.returncode == 2 and "not a run id" in not_a_run.stderr


def test_start_wait_launches_the_supervisor_and_completes(home: Path, detached: None) -> None:
    (home / "config.yaml").write_text(CONFIG)
    done = run_menu(home, "--start", "--wait", "--rounds", "1", env=QUICK_AGENT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "started autotrain-supervisor" in done.stdout
    run_id = re.search(r"started run (run_\w+)", done.stdout)
    assert run_id is not None and f"run {run_id.group(1)} completed" in done.stdout
    status = run_menu(home, "--status", "--json")
    assert status.returncode == 0, status.stderr
    parsed = json.loads(status.stdout)
    assert parsed["run_id"] == run_id.group(1) and parsed["status"] == "completed"
    assert parsed["counters"]["teacher_generated"] == 4 * 5  # four stages of five events each
    human = run_menu(home, "--status")
    assert human.returncode == 0 and "completed" in human.stdout and run_id.group(1) in human.stdout
    listed = run_menu(home, "--list", "--json")
    assert [r["run_id"] for r in json.loads(listed.stdout)] == [run_id.group(1)]


def test_start_wait_on_a_terminal_shows_a_progress_bar(
    home: Path, menu_pty: Callable[..., MenuPty], detached: None
) -> None:
    (home / "config.yaml").write_text(CONFIG)
    follower = menu_pty(QUICK_AGENT, ("--start", "--wait"))
    assert follower.wait_exit(60) == 0
    screen = follower.screen.text()
    assert "round 1/1 · eval · completed" in screen and "4/4" in screen and "━" in screen, screen
    assert re.search(r"run run_\w+ completed", screen)


def test_flags_steer_a_live_run(home: Path, start_supervisor: Callable[..., SupervisorProc]) -> None:
    sup = start_supervisor(env=SLOW_AGENT, config=CONFIG).wait_ready()
    follower = subprocess.Popen(
        [*MENU, "--home", str(home), "--start", "--wait"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        run_id = sup.wait_status("running")["run_id"]
        assert run_menu(home, "--pause").returncode == 0
        sup.wait_status("paused")
        assert run_menu(home, "--pause").returncode == 1, "a second pause is refused"
        assert run_menu(home, "--resume").returncode == 0
        assert not sup.wait_status("running")["pause_requested"]
        stop = run_menu(home, "--stop")
        assert stop.returncode == 0 and run_id in stop.stdout
        sup.wait_status("stopped")
        out, err = follower.communicate(timeout=30)
        assert follower.returncode == 1, "--wait exits 0 only for a completed run"
        assert "ended stopped" in err
        assert "round 1/1" in out, "plain progress lines without a terminal"
        resumed = run_menu(home, "--resume-run")
        assert resumed.returncode == 0 and f"resumed run {run_id}" in resumed.stdout
        assert sup.wait_status("running")["run_id"] == run_id
        assert run_menu(home, "--stop").returncode == 0
        sup.wait_status("stopped")
        refused = run_menu(home, "--stop")
        assert refused.returncode == 1 and "no active run" in refused.stderr
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.communicate()


# -- the interactive menu on a pty ---------------------------------------------------------------------


def test_menu_options_steer_the_run(
    home: Path, start_supervisor: Callable[..., SupervisorProc], menu_pty: Callable[..., MenuPty]
) -> None:
    sup = start_supervisor(env=SLOW_AGENT, config=CONFIG).wait_ready()
    menu = menu_pty()
    menu.expect("supervisor: pid")
    menu.choose("1")
    menu.expect("ROUNDS [integer 1–100] (Enter keeps 1, Esc backs out) =")
    menu.send("\r")
    menu.expect("SAMPLES_PER_ROUND [integer 1–10000] (Enter keeps 4, Esc backs out) =")
    menu.send("\r")
    menu.expect("started run run_")
    run_id = sup.wait_status("running")["run_id"]
    asked = menu.count("ROUNDS [")
    menu.choose("1")  # refused before any question while a run is active
    menu.expect(f"a run is already running ({run_id}); stop it first")
    assert menu.count("ROUNDS [") == asked
    menu.choose("4")
    menu.expect("pause requested")
    sup.wait_status("paused")
    menu.choose("5")
    menu.expect(": resumed")
    assert not sup.wait_status("running")["pause_requested"]
    menu.choose("3")
    menu.expect("stop requested")
    sup.wait_status("stopped")
    menu.choose("2")
    menu.expect(f"resumed run {run_id}")
    assert sup.wait_status("running")["run_id"] == run_id
    menu.choose("3")
    menu.expect("stop requested", times=2)
    sup.wait_status("stopped")
    menu.choose("7")  # the dashboard in the foreground, then back to the menu
    menu.wait_for(
        lambda _: "1 Overview" in menu.screen.visible() and run_id in menu.screen.visible(), "dashboard"
    )
    menu.send("q")
    menu.wait_for(
        lambda _: menu.screen.visible().rstrip().endswith("Select [1-9]:"), "the menu after the dashboard"
    )
    menu.choose("9")
    assert menu.wait_exit() == 0


def test_menu_configure_refuses_bad_values_and_keeps_comments(
    home: Path, menu_pty: Callable[..., MenuPty]
) -> None:
    config = home / "config.yaml"
    config.write_text(CONFIG)
    menu = menu_pty()
    menu.choose("6")
    menu.expect("Field to change")
    menu.send("ROUN")
    menu.wait_for(lambda _: "TEACHER_CONCURRENCY" in menu.screen.visible(), "the completion menu")
    menu.send("\t")
    menu.wait_for(
        lambda _: "Field to change (empty to finish): ROUNDS" in menu.screen.visible(), "completion"
    )
    menu.send("\r")
    menu.expect("ROUNDS [integer 1–100] (Enter keeps 1, Esc backs out) =")
    menu.send("0")  # typing replaces the current value (nothing to erase first)
    menu.wait_for(lambda _: "must be >= 1 (range 1–100)" in menu.screen.visible(), "the rule shown")
    menu.send("\r")  # refused: the prompt stays
    menu.wait_for(lambda _: "Esc backs out) = 0" in menu.screen.visible(), "prompt kept")
    assert config.read_text() == CONFIG, "a refused value is never saved"
    menu.send("\x7f7\r")
    menu.expect("saved ROUNDS = 7")
    assert config.read_text() == CONFIG.replace("ROUNDS: 1  # one", "ROUNDS: 7  # one")
    menu.expect("Field to change", times=2)
    menu.send("RUN_UNIT_TESTS\r")
    menu.expect('RUN_UNIT_TESTS ["0" or "1"] (Enter keeps 0 (default), Esc backs out) =')
    menu.send("yes")
    menu.wait_for(
        lambda _: 'RUN_UNIT_TESTS = \'yes\': expected "0" or "1"' in menu.screen.visible(), "literal rule"
    )
    menu.send("\x7f\x7f\x7f1\r")
    menu.expect("saved RUN_UNIT_TESTS = 1")
    menu.expect("Field to change", times=3)
    assert "Rule:" not in menu.screen.visible(), "a field's help does not outlive its prompt"
    menu.send("\r")
    menu.wait_for(lambda _: menu.screen.visible().rstrip().endswith("Select [1-9]:"), "the main menu")
    assert "Rule:" not in menu.screen.visible(), menu.screen.visible()
    menu.send("\x03")  # Ctrl+C backs out of a value prompt only; here it leaves the menu, quietly
    assert menu.wait_exit() == 0, menu.screen.text()[-3000:]
    assert "Traceback" not in menu.screen.text()
    assert (
        config.read_text() == CONFIG.replace("ROUNDS: 1  # one", "ROUNDS: 7  # one") + 'RUN_UNIT_TESTS: "1"\n'
    )


def test_configure_flag_edits_and_exits(home: Path, menu_pty: Callable[..., MenuPty]) -> None:
    config = home / "config.yaml"
    config.write_text(CONFIG)
    editor = menu_pty(args=("--configure",))
    editor.expect("Field to change")
    editor.send("SEQ_LEN\r")
    editor.expect("SEQ_LEN [integer 128–8192] (Enter keeps 2048 (default), Esc backs out) =")
    editor.send("99999")
    editor.wait_for(lambda _: "must be <= 8192 (range 128–8192)" in editor.screen.visible(), "the rule shown")
    editor.send("\x7f" * 5 + "256\r")
    editor.expect("saved SEQ_LEN = 256")
    editor.expect("Field to change", times=2)
    editor.send("ROUNDS\r")
    editor.expect("ROUNDS [integer 1–100] (Enter keeps 1, Esc backs out) =")
    editor.send("5\x1b")  # Esc backs out of this one field, whatever was typed
    editor.expect("ROUNDS unchanged")
    editor.expect("Field to change", times=3)
    editor.send("ROUNDS\r")
    editor.expect("ROUNDS [integer 1–100] (Enter keeps 1", times=2)
    editor.send("\r")  # Enter keeps the current value
    editor.expect("ROUNDS unchanged", times=2)
    editor.expect("Field to change", times=4)
    editor.send("MAX_COST_USD\r")
    editor.expect("MAX_COST_USD [empty or number >= 0] (Enter keeps (empty) (default), Esc backs out) =")
    editor.send("5\r")
    editor.expect("saved MAX_COST_USD = 5.0")
    editor.expect("Field to change", times=5)
    editor.send("MAX_COST_USD\r")
    editor.expect('(Enter keeps 5.0, "" for empty, Esc backs out) =')
    editor.send('""\r')  # the empty value, which Enter alone could not give
    editor.expect("saved MAX_COST_USD = ", times=2)
    editor.expect("Field to change", times=6)
    editor.send("\x04")  # Ctrl+D leaves the editor
    assert editor.wait_exit() == 0
    assert config.read_text().startswith(CONFIG + "SEQ_LEN: 256\n")
    assert load_config(config, env={}).MAX_COST_USD is None


def test_menu_starts_supervisor_and_http_server(
    home: Path, menu_pty: Callable[..., MenuPty], detached: None, unused_port: int
) -> None:
    (home / "config.yaml").write_text(CONFIG + f"HTTP_PORT: {unused_port}\n")
    menu = menu_pty(QUICK_AGENT)
    menu.expect("supervisor: not running")
    menu.choose("1")
    menu.expect("ROUNDS [integer 1–100] (Enter keeps 1")
    menu.send("\r\r")
    menu.expect("started run run_", timeout_s=40)
    assert "started autotrain-supervisor" in menu.screen.text()
    menu.choose("8")
    menu.expect(f"HTTP_PORT [integer 1024–65535] (Enter keeps {unused_port}, Esc backs out) =")
    menu.send("\r")
    menu.expect("HTTP status server running at")
    url = f"http://127.0.0.1:{unused_port}"
    assert url in menu.screen.text()
    body = wait_until(
        lambda: (b := _get_json(url + "/status")) and b["run_id"] and b, 15, 0.05, "HTTP status"
    )
    assert body["health"] == "ok" and str(body["run_id"]).startswith("run_")
    menu.choose("9")
    assert menu.wait_exit() == 0
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(url + "/health", timeout=2)


def test_menu_refuses_to_run_without_a_terminal(home: Path) -> None:
    for args in ((), ("--configure",)):
        done = run_menu(home, *args)
        assert done.returncode == 2 and "needs a terminal" in done.stderr


def _get_json(url: str) -> dict[str, object] | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return dict(json.loads(response.read()))
    except (urllib.error.URLError, ConnectionError):
        return None


def test_menu_shows_the_values_a_run_will_use_and_where_they_come_from(
    home: Path, menu_pty: Callable[..., MenuPty]
) -> None:
    (home / "config.yaml").write_text(CONFIG)
    menu = menu_pty({"AUTOTRAIN_ROUNDS": "5", "SEQ_LEN": "256"})
    menu.choose("6")
    # The whole listing, drawn (the environment's ROUNDS may show before the lines below it arrive).
    menu.wait_for(
        lambda t: re.search(r"ROUNDS +5 +integer 1–100 \(from the environment\)", t) is not None
        and re.search(r"SEQ_LEN +2048 +integer 128–8192 \(default\)", t) is not None,
        "ROUNDS from the environment and SEQ_LEN's default",
    )
    assert re.search(r"SAMPLES_PER_ROUND +4 +integer 1–10000\n", menu.screen.text() + "\n"), menu.screen.text()
    menu.expect("Field to change")
    menu.send("\r")
    menu.choose("1")
    menu.expect("ROUNDS [integer 1–100] (Enter keeps 5 (from the environment), Esc backs out) =")
    menu.send("\x1b")
    menu.expect("(cancelled)")
    menu.choose("2")  # nothing to resume: refused without starting a supervisor
    menu.expect("--resume-run refused: no stopped, interrupted or failed run to resume")
    assert not (home / "run" / "bus.json").exists()
    menu.choose("9")
    assert menu.wait_exit() == 0
    assert not (home / "runs").exists(), "a cancelled start starts nothing"
