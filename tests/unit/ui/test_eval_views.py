"""The eval outcome's viewers without sockets: view 6, the one-line outcome, /metrics, --list and --compare."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console

from heidi_engine.bus.paired import PairedScores, mcnemar_exact
from heidi_engine.bus.state import EvalSample, EvalScores, RunState
from heidi_engine.bus.summary import run_summary
from heidi_engine.ui.dashboard.frame import Frame, Link
from heidi_engine.ui.dashboard.screen import render
from heidi_engine.ui.eval_text import eval_line
from heidi_engine.ui.http.metrics import exposition
from heidi_engine.ui.menu.compare import CompareError, compare_runs, format_compare
from heidi_engine.ui.status_view import Health
from heidi_engine.ui.viewer import View

BASE = EvalScores(val_loss=2.0, n_val=4, val_pass_at_1=0.25, val_passed=1, val_ci=(0.05, 0.7),
                  humaneval_pass_at_1=0.0, n_humaneval=2, humaneval_ci=(0.0, 0.66))  # fmt: skip


def adapter(rate: float, loss: float) -> EvalScores:
    return BASE.model_copy(update={"val_pass_at_1": rate, "val_passed": int(rate * 4), "val_loss": loss,
                                   "val_ci": (0.3, 0.95)})  # fmt: skip


def state(**changes: object) -> RunState:
    evals = [
        EvalSample(round=1, base=BASE, adapter=adapter(0.5, 1.5), base_round=1, best_round=1),
        EvalSample(round=2, base=BASE, adapter=adapter(0.5, 1.75), base_round=1, best_round=1),
    ]
    fields = {"run_id": "run_20240101_000000_0123abcd", "status": "completed", "evals": evals, "best_round": 1,
              "started_at": "2024-01-01T00:00:00.000Z", "updated_at": "2024-01-01T00:01:30.000Z"}  # fmt: skip
    return RunState.model_validate({**fields, **changes})


def screen(run: RunState, view: int, width: int = 130) -> str:
    console = Console(width=width, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
    console.print(render(Frame(state=run, link=Link(), now=datetime.now(timezone.utc), view=view), width))
    console.file.close()
    return console.export_text()


def test_view_6_marks_the_best_round_and_shows_base_adapter_delta_and_interval() -> None:
    text = screen(state(), 6)
    rows = {
        line.split()[1]: line
        for line in text.splitlines()
        if line.startswith("│ 1") or line.startswith("│ 2")
    }
    assert "★" in rows["1"] and "★" not in rows["2"]
    assert "2.000 → 1.500" in rows["1"] and "-0.500" in rows["1"] and "0.25 → 0.50" in rows["1"]
    assert "+0.25" in rows["1"] and "[0.30–0.95] n=4" in rows["1"] and "0.00→0.00" in rows["1"]
    assert "held-out val loss" in text and "6 Eval" in text
    assert "no round evaluated yet" in screen(RunState(), 6)


def test_the_one_line_outcome_full_and_compact() -> None:
    run = state()
    assert eval_line(run.evals, 1) == (
        "round 2 · held-out pass@1 0.25 → 0.50 (+0.25, [0.30–0.95] n=4) · val loss 2.000 → 1.750 (-0.250) · "
        "HumanEval 0.00 → 0.00 · best round 1"
    )
    assert eval_line(run.evals, 1, compact=True) == "r2 · pass@1 0.25→0.50 · loss 2.000→1.750 · best r1"
    assert eval_line([], None) == "no round evaluated yet"
    empty = EvalSample(round=3, base=EvalScores(), adapter=EvalScores())
    assert "no held-out rows" in eval_line([empty], None) and "no best round yet" in eval_line([empty], None)
    assert "eval r2 · pass@1 0.25→0.50" in screen(run, 1)


def test_metrics_export_eval_gauges_by_round_and_variant() -> None:
    text = exposition(lambda: (View(state=state(), connected=True, silence_s=0.1, error=None, seq=1, events=()),
                                Health("ok"))).decode()  # fmt: skip
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples[("autotrain_eval_val_loss", (("round", "1"), ("variant", "adapter")))] == 1.5
    assert samples[("autotrain_eval_val_loss", (("round", "2"), ("variant", "base")))] == 2.0
    assert samples[("autotrain_eval_heldout_pass_at_1", (("round", "2"), ("variant", "adapter")))] == 0.5
    assert (
        samples[("autotrain_eval_heldout_pass_at_1_lower", (("round", "1"), ("variant", "adapter")))] == 0.3
    )
    assert samples[("autotrain_eval_heldout_tasks", (("round", "1"), ("variant", "base")))] == 4
    assert samples[("autotrain_eval_best_round", ())] == 1
    assert text.count("# TYPE autotrain_eval_val_loss gauge") == 1


def test_metrics_export_the_paired_comparison_by_round_and_task_set() -> None:
    pair = PairedScores(n=164, base_passed=6, adapter_passed=13, gained=8, lost=1, p=mcnemar_exact(8, 1))
    run = state()
    run.evals[1].adapter = adapter(0.5, 1.75).model_copy(update={"humaneval_paired": pair})
    text = exposition(lambda: (View(state=run, connected=True, silence_s=0.1, error=None, seq=1, events=()),
                                Health("ok"))).decode()  # fmt: skip
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples[("autotrain_eval_paired_tasks", (("change", "gained"), ("round", "2"), ("set", "humaneval")))] == 8
    assert samples[("autotrain_eval_paired_tasks", (("change", "lost"), ("round", "2"), ("set", "humaneval")))] == 1
    assert samples[("autotrain_eval_paired_p", (("round", "2"), ("set", "humaneval")))] == 0.0390625
    assert not any(name == "autotrain_eval_paired_p" and ("round", "1") in labels for name, labels in samples)


def test_a_run_summary_carries_duration_rounds_and_the_best_scores() -> None:
    summary = run_summary("run_20240101_000000_0123abcd", state())
    assert summary["duration_s"] == 90.0 and summary["rounds_done"] == 2
    assert (summary["best_round"], summary["best_pass_at_1"], summary["best_val_loss"]) == (1, 0.5, 1.5)
    assert run_summary("run_x", None)["status"] == "unknown"
    assert run_summary("run_x", RunState())["best_pass_at_1"] is None


def test_compare_reads_two_runs_from_their_files(tmp_path: Path) -> None:
    a, b = "run_20240101_000000_0123abcd", "run_20240102_000000_0123abce"
    for run_id, rounds, seed in ((a, 2, 42), (b, 1, 7)):
        folder = tmp_path / "runs" / run_id
        folder.mkdir(parents=True)
        run = state(run_id=run_id, config={"SEED": seed, "ROUNDS": rounds, "LORA_R": 8})
        run.evals = run.evals[:rounds]
        (folder / "state.json").write_text(run.model_dump_json())
    result = compare_runs(tmp_path, a, b)
    assert result["config_differences"] == {"ROUNDS": [2, 1], "SEED": [42, 7]}
    assert [r["round"] for r in result["rounds"]] == [1, 2] and result["rounds"][1][b] is None
    assert result["rounds"][0][a]["delta"]["val_loss"] == -0.5
    json.dumps(result)  # JSON as it is
    text = format_compare(result)
    assert "SEED" in text and "LORA_R" not in text and "round 2" in text and "–" in text.splitlines()[-1]
    with pytest.raises(CompareError, match="no run run_20990101_000000_deadbeef"):
        compare_runs(tmp_path, a, "run_20990101_000000_deadbeef")
    with pytest.raises(CompareError, match="not a run id"):
        compare_runs(tmp_path, "../x", b)


def test_the_trainer_chart_spans_both_rounds_and_marks_each_eval() -> None:
    from heidi_engine.bus.state import TrainerSample, apply_sample

    run = RunState(run_id="run_20240101_000000_0123abcd", status="running")
    for round_no in (1, 2):
        for step in range(1, 31):
            apply_sample(
                run, TrainerSample(round=round_no, step=step, total=30, loss=2.0 / (step + 10 * round_no))
            )
        apply_sample(
            run,
            EvalSample(round=round_no, base=BASE, adapter=adapter(0.5, 1.0 / round_no), best_round=round_no),
        )
    text = screen(run, 3)
    assert "60 points" in text
    marks = next(line for line in text.splitlines() if "eval val loss" in line)
    assert marks.count("▲") == 2 and "r1 1.000 · r2 0.500" in marks
