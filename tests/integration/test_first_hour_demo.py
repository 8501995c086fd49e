"""The demo's closing lines (issue 28, point 9): true about the supervisor, and the outcome as a verdict in
words with its interval, through ``scripts/demo_report.py`` as ``scripts/demo.sh`` runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from harness import SupervisorProc

from heidi_engine.bus.state import EvalScores
from heidi_engine.ui.eval_text import verdict

ROOT = Path(__file__).resolve().parents[2]
RUN_ID = "run_20260101_000000_0123abcd"


def _scores(passed: int, n: int, ci: tuple[float, float], loss: float) -> EvalScores:
    return EvalScores(val_loss=loss, n_val=n, val_pass_at_1=passed / n, val_passed=passed, val_ci=ci)


def test_the_verdict_says_better_worse_or_no_measurable_change_with_the_interval() -> None:
    same = _scores(1, 4, (0.05, 0.70), 0.6)
    assert verdict(same, same) == "no measurable change on 4 held-out tasks (pass@1 0.25 → 0.25, 95% CI 0.05–0.70)"
    low, high = _scores(4, 20, (0.08, 0.42), 0.8), _scores(12, 20, (0.39, 0.78), 0.5)
    assert verdict(low, high) == "better by 0.40 on 20 held-out tasks (pass@1 0.20 → 0.60, 95% CI 0.39–0.78)"
    assert verdict(high, low) == "worse by 0.40 on 20 held-out tasks (pass@1 0.60 → 0.20, 95% CI 0.08–0.42)"
    no_gate = EvalScores(val_loss=0.68, n_val=4), EvalScores(val_loss=0.61, n_val=4)
    assert "no verdict" in verdict(*no_gate) and "0.680 → 0.610" in verdict(*no_gate)


def _run_folder(home: Path, **adapter: object) -> None:
    run_dir = home / "runs" / RUN_ID
    (run_dir / "eval").mkdir(parents=True, exist_ok=True)
    scores = _scores(1, 4, (0.05, 0.70), 0.68).model_dump(mode="json")
    report = {"base": scores, "adapter": {**scores, "val_loss": 0.606, **adapter}}
    (run_dir / "eval" / "report_round_1.json").write_text(json.dumps(report))


def test_the_last_line_states_the_paired_verdict_where_the_eval_stage_measured_it(home: Path) -> None:
    same = {"n": 4, "base_passed": 1, "adapter_passed": 1, "gained": 0, "lost": 0, "p": 1.0}
    humaneval = {"n": 20, "base_passed": 0, "adapter_passed": 7, "gained": 7, "lost": 0, "p": 0.015625}
    _run_folder(home, val_paired=same, humaneval_paired=humaneval)
    assert _report(home)[-1] == (
        "result       base → adapter: too few held-out tasks to tell: 1/4 → 1/4 (0 gained, 0 lost; p < 0.05 "
        "needs 6 or more to change); val loss 0.680 → 0.606; HumanEval: better on 20 problems: 0/20 → 7/20 "
        "(7 gained, 0 lost, p = 0.016)"
    )


def _report(home: Path) -> list[str]:
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "demo_report.py"), str(home), RUN_ID, "39", "0"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def test_the_closing_lines_say_whether_the_supervisor_runs_and_end_with_the_verdict(
    home: Path, start_supervisor: Callable[..., SupervisorProc]
) -> None:
    _run_folder(home)
    lines = _report(home)
    assert f"run {RUN_ID} completed in 39s" in lines
    assert lines[-1] == (
        "result       base → adapter: no measurable change on 4 held-out tasks (pass@1 0.25 → 0.25, "
        "95% CI 0.05–0.70); val loss 0.680 → 0.606"
    ), lines
    assert any(line.startswith("  supervisor   not running") for line in lines), lines
    assert not any("keeps running" in line for line in lines), lines
    sup = start_supervisor().wait_ready()
    running = _report(home)
    pid = sup.info().pid
    assert any(f"supervisor   pid {pid} keeps running on {home}" in line for line in running), running
    assert "--shutdown stops it" in "\n".join(running)


def test_the_demo_does_not_stop_the_supervisor_it_says_keeps_running() -> None:
    """`--wait` ends with "the supervisor (pid N) keeps running …; --shutdown stops it": the demo must
    leave it so, and hand its closing lines to demo_report.py, which asks instead of assuming."""
    script = (ROOT / "scripts" / "demo.sh").read_text(encoding="utf-8")
    commands = [line for line in script.splitlines() if not line.lstrip().startswith("#")]
    assert not any("--shutdown" in line for line in commands), "demo.sh stops the supervisor --wait says keeps running"
    assert any("scripts/demo_report.py" in line for line in commands)
