"""Rotation never loses the run's truth: a run rotating dozens of times with one generation kept, killed -9
at random points and resumed each time, ends with exactly the counters of an uninterrupted run."""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from harness import SupervisorProc, agent_env, scripted, wait_until

from heidi_engine.bus.event import COUNTER_NAMES
from heidi_engine.bus.journal import event_files
from heidi_engine.bus.ledger import load_ledger

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
