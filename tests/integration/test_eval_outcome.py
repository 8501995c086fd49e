"""The eval outcome in every viewer, through a real supervisor with no model.

A stand-in eval agent reports a made-up outcome per round (tests/agents/eval_outcome_agent.py); the other
stages are the scripted no-op agent. Two runs are made (two rounds, then one with another seed), and
the outcome is read back through the state, ``--status``, ``--list``, ``--compare``,
``--export-tensorboard``, the dashboard's view 6 (``--once`` and in a tmux pane) and ``/metrics``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import TESTS, SupervisorProc, agent_env, scripted

pytestmark = pytest.mark.timeout(180)

MENU = [sys.executable, "-m", "heidi_engine.ui.menu_cli"]
DASH = [sys.executable, "-m", "heidi_engine.ui.dash_cli"]
Start = Callable[..., SupervisorProc]


def menu(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [*MENU, "--home", str(home), *args], stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60
    )
    print(f"menu {args}: rc={done.returncode}\n{done.stdout}\n{done.stderr}")  # evidence on failure
    return done


@pytest.fixture
def two_runs(start_supervisor: Start, home: Path) -> Iterator[tuple[SupervisorProc, str, str]]:
    env = agent_env(scripted("--events", "1"), eval=f"{sys.executable} {TESTS / 'agents' / 'eval_outcome_agent.py'}")
    sup = start_supervisor(env=env, config="ROUNDS: 2\n").wait_ready()
    first = sup.call("start")["run_id"]
    assert sup.wait_status("completed", "failed")["status"] == "completed", sup.output()
    second = sup.call("start", {"overrides": {"ROUNDS": 1, "SEED": 7}})["run_id"]
    assert sup.wait_status("completed", "failed")["status"] == "completed", sup.output()
    yield sup, first, second


def test_the_outcome_reaches_state_status_list_compare_tensorboard_and_view_6(
    two_runs: tuple[SupervisorProc, str, str], home: Path, tmp_path: Path
) -> None:
    sup, first, second = two_runs
    state = sup.call("snapshot")["state"]
    assert [e["round"] for e in state["evals"]] == [1] and state["best_round"] == 1
    saved = json.loads((home / "runs" / first / "state.json").read_text())
    assert [e["round"] for e in saved["evals"]] == [1, 2] and saved["best_round"] == 2

    status = menu(home, "--status")
    assert status.returncode == 0
    assert "round 1 · held-out: too few held-out tasks to tell: 1/4 → 1/4 (0 gained, 0 lost; " in status.stdout
    assert "val loss 2.000 → 1.750 (-0.250)" in status.stdout and "best round 1" in status.stdout
    as_json = json.loads(menu(home, "--status", "--json").stdout)
    assert as_json["best_round"] == 1 and as_json["evals"][0]["adapter"]["val_loss"] == 1.75

    runs = {r["run_id"]: r for r in json.loads(menu(home, "--list", "--json").stdout)}
    assert runs[first]["rounds_done"] == 2 and runs[first]["best_round"] == 2
    assert runs[first]["best_pass_at_1"] == 0.5 and runs[first]["best_val_loss"] == 1.5
    assert isinstance(runs[first]["duration_s"], float) and runs[first]["estimated_cost_usd"] == 0.0
    listed = menu(home, "--list").stdout
    assert "BEST PASS@1" in listed and "0.50 (round 2)" in listed and "2/2" in listed and "1/1" in listed

    compared = json.loads(menu(home, "--compare", first, second, "--json").stdout)
    assert compared["config_differences"] == {"ROUNDS": [2, 1], "SEED": [42, 7]}
    assert [r["round"] for r in compared["rounds"]] == [1, 2]
    assert compared["rounds"][1][second] is None
    assert compared["rounds"][0][first]["delta"]["val_pass_at_1"] == 0.0
    assert [r["run_id"] for r in compared["runs"]] == [first, second]
    text = menu(home, "--compare", first, second).stdout
    assert "ROUNDS" in text and "SEED" in text and "round 2" in text and "pass@1 0.25→0.50" in text
    for args, what in (
        ((first, "run_20990101_000000_deadbeef"), "no run run_20990101_000000_deadbeef"),
        ((first, "../etc"), "is not a run id"),
    ):
        refused = menu(home, "--compare", *args)
        assert refused.returncode == 2 and what in refused.stderr

    out = tmp_path / "tb"
    exported = menu(home, "--export-tensorboard", first, str(out))
    assert exported.returncode == 0 and f"of {first} to {out}" in exported.stdout
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out))
    events.Reload()
    pass_at_1 = [(s.step, s.value) for s in events.Scalars("eval/adapter/heldout_pass_at_1")]
    assert pass_at_1 == [(1, 0.25), (2, 0.5)]
    assert [s.value for s in events.Scalars("eval/base/val_loss")] == [2.0, 2.0]
    assert menu(home, "--export-tensorboard", "run_20990101_000000_deadbeef", str(out)).returncode == 2

    # The dashboard: view 6 of the finished first run, its Overview line, then live in a terminal.
    env = {"COLUMNS": "120", "PATH": "/usr/bin:/bin"}
    replay = subprocess.run(
        [*DASH, "--home", str(home), "--run", first, "--once", "--view", "6"],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert replay.returncode == 0, replay.stderr
    rows = [line for line in replay.stdout.splitlines() if line.startswith("│ 2 ★")]
    assert rows and "2.000 → 1.500" in rows[0] and "0.25 → 0.50" in rows[0] and "+0.25" in rows[0], replay.stdout
    assert "base scored once, in round 1" in replay.stdout
    overview = subprocess.run(
        [*DASH, "--home", str(home), "--run", first, "--once"], capture_output=True, text=True, timeout=60, env=env
    )
    assert "eval r2 · 1/4→2/4 too few to tell · best r2" in overview.stdout, overview.stdout
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed")
    from tmux_pane import Pane

    pane = Pane(["--home", str(home)])
    try:
        pane.wait("Overview")
        pane.press("6")
        text: Any = pane.wait("Eval: base vs adapter on the held-out set")
        assert "│ 1 ★" in pane.wait("│ 1 ★"), text
        pane.press("q")
        assert "dash exited rc=0" in pane.wait("dash exited rc=", 10)
    finally:
        pane.kill()
