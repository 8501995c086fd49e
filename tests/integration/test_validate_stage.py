"""The validate stage: rejections, the unit-test gate, cross-round dedup, the split, and resume.

The first test runs the real generate and validate agents for two rounds under a real supervisor,
with the teacher's replies scripted per task on the fake OpenAI server; the others call the stage's
functions directly, or its ``main`` with a small in-process runtime where a supervisor adds nothing.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from data.task_solutions import SOLUTIONS
from fakes.openai_server import FakeOpenAIServer
from harness import FileRuntime, SupervisorProc, agent_env, scripted

from heidi_engine.agents import validate
from heidi_engine.agents.dataset.samples import read_jsonl_skipping_bad, sample_id, write_jsonl
from heidi_engine.agents.dataset.tasks import Task, instruction_text, load_bank, load_jsonl, tasks_for_round
from heidi_engine.agents.layout import RoundFiles
from heidi_engine.agents.runtime import StopRequested
from heidi_engine.bus.config import load_config
from heidi_engine.bus.journal import read_events
from heidi_engine.bus.redaction import default_redactor

pytestmark = pytest.mark.timeout(180)

Start = Callable[..., SupervisorProc]
AWS_KEY = "AKIAIOSFODNN7EXAMPLE"
OPENAI_KEY = "sk-proj-Abc123def456GHI789jkl012MNO"
BANK = {task.task_id: task for task in load_bank()}


def fenced(code: str) -> str:
    return f"Here is the function:\n```python\n{code}```\n"


def task_file(home: Path) -> list[Task]:
    """Six bank tasks and a reworded copy of the first one (same function, another id)."""
    ids = [
        "bank/001_add_numbers",
        "bank/002_reverse_string",
        "bank/003_count_vowels",
        "bank/004_is_even",
        "bank/005_max_of_list",
        "bank/006_square",
    ]
    rows = [BANK[i].model_dump() for i in ids]
    rows.append({**rows[0], "task_id": "mine/add_again", "description": "Add a and b; return the total."})
    (home / "tasks.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return load_jsonl(home / "tasks.jsonl")


ROUND_1 = {
    "bank/001_add_numbers": fenced(SOLUTIONS["bank/001_add_numbers"]),
    # The same solution with renamed variables, a comment and other spacing: a near duplicate.
    "mine/add_again": fenced("def add_numbers(x,  y):\n    # just add\n    return x+y\n"),
    "bank/002_reverse_string": fenced(
        f'def reverse_string(s):\n    # creds: {AWS_KEY}\n    key = "{OPENAI_KEY}"\n    return s[::-1]\n'
    ),
    "bank/003_count_vowels": fenced(""),
    "bank/005_max_of_list": "Sure! Use max(), unless the list is empty.",
    "bank/004_is_even": fenced("def is_even(n):\n    return n % 2 == 1\n"),  # wrong: fails the gate
    "bank/006_square": fenced(SOLUTIONS["bank/006_square"]),
}
ROUND_2 = {
    "bank/001_add_numbers": fenced("def add_numbers(p, q):\n    return p + q  # the sum\n"),
    "mine/add_again": fenced(SOLUTIONS["bank/001_add_numbers"]),
    "bank/002_reverse_string": fenced(SOLUTIONS["bank/002_reverse_string"]),
    "bank/003_count_vowels": fenced(SOLUTIONS["bank/003_count_vowels"]),
    "bank/005_max_of_list": fenced(SOLUTIONS["bank/005_max_of_list"]),
    "bank/004_is_even": fenced("def is_even(k):\n    return k % 2 == 1\n"),
    "bank/006_square": fenced("def square(m):\n    return m*m\n"),
}


def messages_of(run_dir: Path, **match: Any) -> list[str]:
    return [e.message for e in read_events(run_dir) if all(getattr(e, k) == v for k, v in match.items())]


def test_two_rounds_reject_each_reason_gate_and_split(start_supervisor: Start, home: Path) -> None:
    tasks = tasks_for_round(task_file(home), 1, 7, 42)
    assert tasks == tasks_for_round(task_file(home), 2, 7, 42)  # a full window: the same order each round
    script = [("ok", replies[task.task_id], 40, 20) for replies in (ROUND_1, ROUND_2) for task in tasks]
    config = {
        "ROUNDS": 2,
        "SAMPLES_PER_ROUND": 7,
        "TEACHER_CONCURRENCY": 1,
        "TEACHER_MODEL": "gpt-4o-mini",
        "TASK_SOURCE": "file:tasks.jsonl",
        "RUN_UNIT_TESTS": "1",
        "VAL_RATIO": 0.0,  # no held-out tasks: every task is answered in both rounds (held-out: its own test)
    }
    env = {**agent_env(scripted("--events", "0"), generate="", validate=""), "OPENAI_API_KEY": "sk-test-x1"}
    with FakeOpenAIServer(script=script) as server:
        config["TEACHER_BASE_URL"] = server.url
        sup = start_supervisor(env=env, config="".join(f"{k}: {json.dumps(v)}\n" for k, v in config.items()))
        run_id = sup.wait_ready().call("start")["run_id"]
        final = sup.wait_status("completed", "failed", timeout_s=150)
    assert final["status"] == "completed", sup.output()
    assert {k: v for k, v in final["counters"].items() if v} == {
        "teacher_generated": 14,
        "validated_ok": 6,
        "rejected_schema": 2,
        "rejected_secret": 1,
        "rejected_dedup": 5,
        "test_pass": 5,
        "test_fail": 1,
    }
    run_dir = home / "runs" / run_id
    ids = {task.task_id: sample_id(1, i) for i, task in enumerate(tasks)}
    first = RoundFiles.of(run_dir, 1)
    clean_1 = {row["metadata"]["task_id"] for row in read_jsonl_skipping_bad(first.clean)}
    kept_add = min(("bank/001_add_numbers", "mine/add_again"), key=lambda t: ids[t])
    assert clean_1 == {kept_add, "bank/004_is_even", "bank/006_square"}
    assert {row["metadata"]["task_id"] for row in read_jsonl_skipping_bad(first.tested)} == {kept_add, "bank/006_square"}
    clean_2 = {row["metadata"]["task_id"] for row in read_jsonl_skipping_bad(RoundFiles.of(run_dir, 2).clean)}
    assert clean_2 == {"bank/002_reverse_string", "bank/003_count_vowels", "bank/005_max_of_list"}

    events_1 = " | ".join(messages_of(run_dir, stage="validate", round=1))
    secret_id = ids["bank/002_reverse_string"]
    assert f"rejected_secret: 1 (e.g. {secret_id}: aws_access_key_id, openai_key)" in events_1
    assert f"{ids['bank/003_count_vowels']}: empty output" in events_1
    assert f"{ids['bank/005_max_of_list']}: output is not valid Python" in events_1
    other_add = ({"bank/001_add_numbers", "mine/add_again"} - {kept_add}).pop()
    assert f"{ids[other_add]}: near duplicate of {ids[kept_add]}" in events_1
    assert f"{ids['bank/004_is_even']}: fail (AssertionError)" in events_1
    events_2 = " | ".join(messages_of(run_dir, stage="validate", round=2))
    assert "rejected_dedup: 4 (e.g. r2-" in events_2 and "duplicate of r1-" in events_2

    raw_secret = next(row for row in read_jsonl_skipping_bad(first.raw) if row["id"] == secret_id)
    assert raw_secret["metadata"]["secret_kinds"] == ["aws_access_key_id", "openai_key"]
    assert "[REDACTED:aws_access_key_id]" in raw_secret["output"]
    for path in home.rglob("*"):
        if path.is_file() and not path.is_socket():
            assert (
                AWS_KEY.encode() not in path.read_bytes() and OPENAI_KEY.encode() not in path.read_bytes()
            ), path

    for round_no in (1, 2):
        files = RoundFiles.of(run_dir, round_no)
        tested = read_jsonl_skipping_bad(files.tested)
        assert (read_jsonl_skipping_bad(files.train), read_jsonl_skipping_bad(files.val)) == (tested, [])
    final_event = [e for e in read_events(run_dir) if e.stage == "validate" and e.artifact_paths][-1]
    assert final_event.artifact_paths == [
        f"data/round_2/{name}.jsonl" for name in ("clean", "tested", "train", "val")
    ]


# -- the stage's functions -------------------------------------------------------------------------


def row_for(task: Task, output: str, index: int = 0, **changes: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": sample_id(1, index),
        "instruction": instruction_text(task),
        "input": "",
        "output": output,
        "tests": task.tests,
        "metadata": {
            "task_id": task.task_id,
            "entry_point": task.entry_point,
            "round": 1,
            "teacher_model": "gpt-4o-mini",
            "usage": {"requests_sent": 1},
            "ts": "2024-01-01T00:00:00Z",
        },
    }
    row.update(changes)
    return row


ADD = BANK["bank/001_add_numbers"]
GOOD = SOLUTIONS["bank/001_add_numbers"]


@pytest.mark.parametrize(
    ("row", "problem"),
    [
        ({k: v for k, v in row_for(ADD, GOOD).items() if k != "tests"}, "missing field 'tests'"),
        (row_for(ADD, GOOD, tests="  \n"), "empty tests"),
        (row_for(ADD, ""), "empty output"),
        (row_for(ADD, "The function adds its arguments."), "output is not valid Python: invalid syntax"),
        (row_for(ADD, GOOD, tests="assert add_numbers(1, 2) ==="), "tests are not valid Python"),
        (row_for(ADD, "def add(a, b):\n    return a + b\n"), "output does not define add_numbers()"),
        ({**row_for(ADD, GOOD), "output": 7}, "output must be str, got int"),
        (row_for(ADD, GOOD, metadata={"task_id": "x"}), "metadata.entry_point: Field required"),
        (row_for(ADD, GOOD, id="sample 1"), "id: String should match pattern"),
        (row_for(ADD, GOOD + "\n# " + "x" * 600 + "\n"), "too long:"),
    ],
)
def test_schema_problems_are_named(row: dict[str, Any], problem: str) -> None:
    found = validate.schema_problem(row, seq_len=128)
    assert found is not None and found.startswith(problem), found


def test_a_good_sample_has_no_schema_problem_and_no_secret() -> None:
    row = row_for(ADD, GOOD)
    assert validate.schema_problem(row, seq_len=128) is None
    assert validate.secret_kinds(row, default_redactor()) == frozenset()
    placeholder = row_for(
        ADD, "def add_numbers(a, b):\n    key = '[REDACTED:openai_key]'\n    return a + b\n"
    )
    assert validate.secret_kinds(placeholder, default_redactor()) == frozenset()


def test_secrets_are_found_from_the_record_or_by_a_rescan_anywhere_in_the_row() -> None:
    recorded = row_for(ADD, GOOD)
    recorded["metadata"]["secret_kinds"] = ["github_token"]
    assert validate.secret_kinds(recorded, default_redactor()) == {"github_token"}
    planted = row_for(ADD, GOOD, tests=f"# {AWS_KEY}\n" + ADD.tests)
    assert validate.secret_kinds(planted, default_redactor()) == {"aws_access_key_id"}


def test_rows_of_heldout_tasks_never_reach_train() -> None:
    rows = [row_for(BANK[task_id], code, i) for i, (task_id, code) in enumerate(sorted(SOLUTIONS.items()))]
    rows.append({"id": "r1-99999"})  # no task id: never held out
    held = {"bank/002_reverse_string", "bank/040_merge_intervals"}
    train, val = validate.split_heldout(rows, held)
    assert [row["metadata"]["task_id"] for row in val] == sorted(held)
    assert len(train) == len(rows) - 2 and train[-1] == {"id": "r1-99999"}
    assert validate.split_heldout(rows, set()) == (rows, [])


# -- main with an in-process runtime -----------------------------------------------------------------


def counted(run_dir: Path) -> dict[str, int]:
    sums: dict[str, int] = {}
    for event in read_events(run_dir):
        for name, delta in event.counters_delta.items():
            sums[name] = sums.get(name, 0) + delta
    return sums


def raw_rows() -> list[dict[str, Any]]:
    rows = [row_for(BANK[task_id], code, i) for i, (task_id, code) in enumerate(sorted(SOLUTIONS.items()))]
    rows.append(row_for(ADD, "def add_numbers(u, v):\n    return u + v\n", len(rows)))  # duplicate
    rows.append(row_for(ADD, "", len(rows)))  # empty output
    return rows


@pytest.mark.parametrize("gate", ["0", "1"])
def test_a_stopped_validate_resumes_to_the_same_files_and_counts(tmp_path: Path, gate: str) -> None:
    config = load_config(None, env={}, overrides={"RUN_UNIT_TESTS": gate, "VAL_RATIO": "0.2"})
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    for run_dir in (whole, resumed):
        run_dir.mkdir()
        write_jsonl(RoundFiles.of(run_dir, 1).ensure().raw, raw_rows())
        (run_dir / "heldout.json").write_text(json.dumps(sorted(SOLUTIONS)[:16]))
    validate.main(FileRuntime(whole, config, "validate"))  # type: ignore[arg-type]
    with pytest.raises(StopRequested):
        validate.main(FileRuntime(resumed, config, "validate", stop_at_checkpoint=2 if gate == "0" else 4))  # type: ignore[arg-type]
    assert 0 < sum(counted(resumed).values()) < sum(counted(whole).values())
    validate.main(FileRuntime(resumed, config, "validate"))  # type: ignore[arg-type]
    validate.main(FileRuntime(resumed, config, "validate"))  # a third attempt changes nothing
    expected = {"validated_ok": 81, "rejected_dedup": 1, "rejected_schema": 1}
    if gate == "1":
        expected.update(test_pass=81)
    assert {k: v for k, v in counted(whole).items() if v} == expected
    assert counted(resumed) == counted(whole)
    for name in ("clean", "tested", "train", "val"):
        path = Path("data/round_1") / f"{name}.jsonl"
        assert (whole / path).exists() == (resumed / path).exists() == (name != "tested" or gate == "1")
        if (whole / path).exists():
            assert (whole / path).read_bytes() == (resumed / path).read_bytes()
    val = read_jsonl_skipping_bad(whole / "data/round_1/val.jsonl")
    assert sorted(row["metadata"]["task_id"] for row in val) == sorted(SOLUTIONS)[:16]
    assert val == read_jsonl_skipping_bad(whole / "data/heldout/val.jsonl")
    assert not {row["metadata"]["task_id"] for row in read_jsonl_skipping_bad(whole / "data/round_1/train.jsonl")} & set(
        sorted(SOLUTIONS)[:16]
    )
