"""Rotation never loses the run's truth: a run rotating dozens of times with one generation kept, killed -9
at random points and resumed each time, ends with exactly the counters of an uninterrupted run; and a
ledger lost after rotation deleted generations is rebuilt from state.json, or the resume is refused with the
reason, never counted again in silence."""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from harness import SupervisorProc, agent_env, scripted, wait_until

from heidi_engine.bus.connection import read_bus_info
from heidi_engine.bus.control import ControlClient
from heidi_engine.bus.errors import CommandRefused
from heidi_engine.bus.event import COUNTER_NAMES
from heidi_engine.bus.journal import event_files, log_is_whole
from heidi_engine.bus.ledger import Ledger, load_ledger

Start = Callable[..., SupervisorProc]

EVENTS = 60  # per stage and round; an uninterrupted run counts EVENTS × 4 stages × ROUNDS
ROUNDS = 2
CONFIG = f"ROUNDS: {ROUNDS}\nEVENT_LOG_MAX_SIZE_MB: 0.002\nEVENT_LOG_RETENTION: 1\nAGENT_MAX_RESTARTS: 5\n"
KILLS = 5


def _dash_counters(home: Path, run_id: str) -> dict[str, int]:
    out = subprocess.run(
        [sys.executable, "-m", "heidi_engine.ui.dash_cli", "--home", str(home), "--run", run_id, "--once"],
        capture_output=True, text=True, timeout=60, env={**os.environ, "COLUMNS": "120"},
    )
    assert out.returncode == 0, out.stderr
    found = re.findall(r"│ (\w+)\s+([\d,]+)\s", out.stdout)
    return {name: int(value.replace(",", "")) for name, value in found if name in COUNTER_NAMES}


def test_killed_five_times_while_rotating_and_resumed_counts_exactly_once(start_supervisor: Start, home: Path) -> None:
    seed = int(os.environ.get("AUTOTRAIN_CHAOS_SEED", random.randrange(10**6)))
    rng = random.Random(seed)
    env = agent_env(scripted("--events", str(EVENTS), "--delay", "0.01"))
    sup = start_supervisor(env=env, config=CONFIG).wait_ready()
    run_id = sup.call("start")["run_id"]
    run_dir = home / "runs" / run_id
    kills = 0
    while kills < KILLS:
        # A random moment of this supervisor's life: anywhere in a stage, a rotation or a boundary.
        kill_at = rng.uniform(0.3, 1.2)

        def due(sup: SupervisorProc = sup, kill_at: float = kill_at) -> bool:
            status = sup.status()
            return bool(status["status"] == "completed" or (status["status"] == "running" and status["uptime_s"] >= kill_at))

        wait_until(due, 30, 0.02, "the kill point", sup.evidence)
        if sup.status()["status"] == "completed":
            break
        sup.kill9()
        kills += 1
        sup = start_supervisor(env=env, config=CONFIG).wait_ready()
        listed = {r["run_id"]: r["status"] for r in sup.call("list_runs")}
        assert listed[run_id] == "interrupted", f"seed {seed}: {listed}"
        assert sup.call("resume_run", {"run_id": run_id})["run_id"] == run_id
    final = sup.wait_status("completed", timeout_s=120)
    expected = EVENTS * 4 * ROUNDS
    assert kills == KILLS, f"seed {seed}: the run completed after {kills} kills; make it longer"
    assert final["counters"]["teacher_generated"] == expected, f"seed {seed}: {final['counters']}"
    ledger = load_ledger(run_dir)
    assert ledger.counters == final["counters"]
    assert len(ledger.done()) == 4 * ROUNDS + ROUNDS  # every stage and every round_end, once
    starts = [json.loads(line) for line in (run_dir / "starts.jsonl").read_text().splitlines()]
    assert not [s for s in starts if s["rerun"]], f"seed {seed}: a completed stage ran again: {starts}"
    assert len(event_files(run_dir)) <= 2  # retention 1: the rest of the history is gone ...
    sup.stop()
    saved = json.loads((run_dir / "state.json").read_text())
    assert saved["counters"] == final["counters"]  # ... and the totals are whole
    assert _dash_counters(home, run_id) == final["counters"]
    assert load_ledger(run_dir).position is not None and ledger.event_count > 20 * 6  # ≥ 20 rotations' worth


# -- a lost ledger after rotation deleted generations --------------------------------------------------

# Per stage and round. A generation (21 KB) holds over two stages' events, or 4 s of them: the end of the
# stage before the killed one, and state.json's last event (saved each second), are still in the files.
LOSS_EVENTS = 30
LOSS_CONFIG = "ROUNDS: 2\nEVENT_LOG_MAX_SIZE_MB: 0.02\nEVENT_LOG_RETENTION: 1\nSTOP_GRACE_S: 1\n"


def _killed_in_round_2(start: Start, home: Path) -> tuple[dict[str, str], str, Path, Ledger]:
    """A run killed -9 in round 2, once rotation has deleted generations: its environment, id, folder,
    and its ledger as the kill left it (the truth the files must keep)."""
    env = agent_env(scripted("--events", str(LOSS_EVENTS), "--delay", "0.05"))
    sup = start(env=env, config=LOSS_CONFIG).wait_ready()
    run_id = sup.call("start")["run_id"]
    run_dir = home / "runs" / run_id

    def deep_in_round_2() -> bool:
        status = sup.status()
        assert status["status"] == "running", f"{status}\n{sup.evidence()}"
        return bool(status["current_round"] == 2 and status["current_stage"] in ("validate", "train", "eval")
                    and not log_is_whole(run_dir))

    wait_until(deep_in_round_2, 120, 0.05, "round 2, with generations deleted", sup.evidence)
    sup.kill9()
    truth = load_ledger(run_dir)
    assert not log_is_whole(run_dir) and truth.counters["teacher_generated"] > 4 * LOSS_EVENTS
    return env, run_id, run_dir, truth


def _starts(run_dir: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in (run_dir / "starts.jsonl").read_text().splitlines()]


def _menu(home: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "heidi_engine.ui.menu_cli", "--home", str(home), *args],
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})}, check=False)


def _shown(done: subprocess.CompletedProcess[str]) -> str:
    return f"exit status {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"


@pytest.mark.parametrize("damage", ["removed", "truncated"])
def test_a_lost_ledger_is_rebuilt_from_state_json_and_no_completed_stage_runs_again(
    start_supervisor: Start, home: Path, damage: str
) -> None:
    env, run_id, run_dir, truth = _killed_in_round_2(start_supervisor, home)
    ledger = run_dir / "ledger.json"
    if damage == "removed":
        ledger.unlink()
    else:
        ledger.write_bytes(ledger.read_bytes()[: ledger.stat().st_size // 2])
    orphan = run_dir / ".ledger.json.k1ll9x0r.tmp"  # what a kill between the temp file and its rename leaves
    orphan.write_text('{"version":')
    sup = start_supervisor(env=env, config=LOSS_CONFIG).wait_ready()
    assert not orphan.exists(), sup.evidence()
    recovered = sup.status()  # the newest resumable run, as the new supervisor found it
    assert recovered["run_id"] == run_id and recovered["status"] == "interrupted", recovered
    # The totals from before the loss (state.json and the events after it), not a count of what remains.
    assert recovered["counters"] == truth.counters, f"{recovered['counters']} != {truth.counters}\n{sup.evidence()}"
    assert recovered["health"] == "ok" and "rebuilt from state.json" in sup.output(), sup.evidence()
    assert recovered["ledger_bytes"] == ledger.stat().st_size  # the rebuilt ledger, written back
    started_before = len(_starts(run_dir))
    assert sup.call("resume_run", {"run_id": run_id})["run_id"] == run_id
    final = sup.wait_status("completed", timeout_s=120)
    assert final["counters"]["teacher_generated"] == LOSS_EVENTS * 4 * 2, f"{final['counters']}\n{sup.evidence()}"
    again = [(s["round"], s["stage"]) for s in _starts(run_dir)[started_before:]]
    assert again and not set(again) & truth.done(), f"completed stages ran again: {again}, done {truth.done()}"
    assert len(load_ledger(run_dir).done()) == 4 * 2 + 2


def test_an_empty_state_json_is_listed_and_resumed_from_the_ledger(
    start_supervisor: Start, home: Path, detached: None
) -> None:
    env, run_id, run_dir, truth = _killed_in_round_2(start_supervisor, home)
    (run_dir / "state.json").write_bytes(b"")
    listed = _menu(home, "--list", "--json")
    assert listed.returncode == 0, _shown(listed)
    run = {r["run_id"]: r for r in json.loads(listed.stdout)}[run_id]
    # The ledger's totals; its status "running" reads interrupted, since no supervisor runs it (issue 28).
    assert run["status"] == "interrupted" and run["counters"] == truth.counters, _shown(listed)
    resumed = _menu(home, "--resume-run", run_id, "--json", env=env)
    assert resumed.returncode == 0 and json.loads(resumed.stdout)["run_id"] == run_id, _shown(resumed)
    with ControlClient(read_bus_info(home), timeout_s=10) as client:
        wait_until(lambda: client.call("status")["status"] == "completed", 120, 0.1, "the resumed run to complete",
                   lambda: (home / "supervisor.log").read_text(errors="replace")[-4000:])
        final = client.call("status")
    assert final["counters"]["teacher_generated"] == LOSS_EVENTS * 4 * 2, final["counters"]
    assert json.loads((run_dir / "state.json").read_text())["status"] == "completed"
    shown, human = _menu(home, "--status", "--json"), _menu(home, "--status")
    assert json.loads(shown.stdout)["ledger_bytes"] == (run_dir / "ledger.json").stat().st_size, _shown(shown)
    assert f"ledger      {(run_dir / 'ledger.json').stat().st_size:,} bytes" in human.stdout, _shown(human)


def test_a_lost_ledger_and_state_json_refuse_the_resume_until_an_empty_ledger_is_written(
    start_supervisor: Start, home: Path
) -> None:
    env, run_id, run_dir, _truth = _killed_in_round_2(start_supervisor, home)
    (run_dir / "ledger.json").unlink()
    (run_dir / "state.json").write_bytes(b"")
    listed = _menu(home, "--list")
    assert listed.returncode == 0 and "unknown" in listed.stdout and "ledger.json is missing" in listed.stdout, _shown(listed)
    refused = _menu(home, "--resume-run", run_id, env=env)
    line = refused.stderr.strip()
    assert refused.returncode == 1 and "\n" not in line, _shown(refused)
    assert "ledger.json is missing" in line and "state.json cannot stand in" in line, _shown(refused)
    assert f"echo '{{}}' > {run_dir / 'ledger.json'}" in line, _shown(refused)
    assert "started autotrain-supervisor" not in refused.stdout + refused.stderr, _shown(refused)  # none left behind
    sup = start_supervisor(env=env, config=LOSS_CONFIG).wait_ready()
    with pytest.raises(CommandRefused, match=r"ledger\.json is missing and state\.json cannot stand in"):
        sup.call("resume_run", {"run_id": run_id})
    sup.stop()
    # The operator's choice: count again only what the event files still hold.
    (run_dir / "ledger.json").write_text("{}")
    sup = start_supervisor(env=env, config=LOSS_CONFIG).wait_ready()
    assert sup.call("resume_run", {"run_id": run_id})["run_id"] == run_id
    assert "counting only the events still on disk" in sup.output(), sup.evidence()
