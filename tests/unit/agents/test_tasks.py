"""Tests for the generate stage's task sources: the bank, user JSONL files, self-instruct and prompts."""

from __future__ import annotations

import ast
import builtins
import json
import runpy
import time
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from heidi_engine.agents.dataset.tasks import (
    SELF_INSTRUCT_PROMPT,
    SOLUTION_SYSTEM_PROMPT,
    Task,
    TaskSourceError,
    build_self_instruct_messages,
    build_solution_messages,
    extract_code,
    instruction_text,
    load_bank,
    load_jsonl,
    parse_proposed_task,
    tasks_for_round,
)

SOLUTIONS: dict[str, str] = runpy.run_path(
    str(Path(__file__).resolve().parents[2] / "data" / "task_solutions.py")
)["SOLUTIONS"]
BANK = load_bank()
# Bodies of deliberately wrong implementations: a bank task whose tests any of these pass is vacuous.
WRONG_BODIES = ("return None", "return 0", "return ''", "return []", "return args[0] if args else None")


def _run(code: str, tests: str) -> None:
    namespace: dict[str, Any] = {"__name__": "__task__"}
    exec(compile(code, "<solution>", "exec"), namespace)
    exec(compile(tests, "<tests>", "exec"), namespace)


def _task_dict(**overrides: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "task_id": "user/add",
        "entry_point": "add",
        "signature": "def add(a: int, b: int) -> int:",
        "description": "Return a plus b.",
        "tests": "assert add(1, 2) == 3\nassert add(0, 0) == 0",
    }
    fields.update(overrides)
    return fields


def _write_lines(tmp_path: Path, *lines: str) -> Path:
    path = tmp_path / "tasks.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _load_error(path: Path) -> str:
    with pytest.raises(TaskSourceError) as info:
        load_jsonl(path)
    return str(info.value)


# ---------------------------------------------------------------- the bank


def test_bank_is_large_with_unique_well_formed_ids() -> None:
    assert len(BANK) >= 64
    ids = [task.task_id for task in BANK]
    assert len(set(ids)) == len(ids)
    for number, task in enumerate(BANK, start=1):
        assert task.task_id == f"bank/{number:03d}_{task.entry_point}"
        assert task.tags, task.task_id


def test_bank_mixes_difficulties_with_many_easy_tasks() -> None:
    by_level = {level: sum(t.difficulty == level for t in BANK) for level in ("easy", "medium", "hard")}
    assert by_level["easy"] >= 20
    assert by_level["medium"] >= 15
    assert by_level["hard"] >= 5


def test_every_bank_task_has_a_reference_solution_and_nothing_else_does() -> None:
    assert set(SOLUTIONS) == {task.task_id for task in BANK}


def test_bank_tests_have_three_to_six_asserts_and_call_only_the_entry_point() -> None:
    allowed_builtins = set(dir(builtins))
    for task in BANK:
        tree = ast.parse(task.tests)
        asserts = sum(isinstance(node, ast.Assert) for node in ast.walk(tree))
        assert 3 <= asserts <= 6, f"{task.task_id}: {asserts} asserts"
        assert not any(isinstance(node, (ast.Import, ast.ImportFrom)) for node in ast.walk(tree))
        names = [node for node in ast.walk(tree) if isinstance(node, ast.Name)]
        local = {node.id for node in names if isinstance(node.ctx, ast.Store)}
        unknown = {node.id for node in names} - local - allowed_builtins - {task.entry_point}
        assert not unknown, f"{task.task_id} uses {unknown}"


@pytest.mark.parametrize("task", BANK, ids=[t.task_id for t in BANK])
def test_bank_tests_pass_against_the_reference_solution(task: Task) -> None:
    started = time.perf_counter()
    _run(SOLUTIONS[task.task_id], task.tests)
    # The budget is 100 ms per task; the margin absorbs a busy shared CI machine.
    assert time.perf_counter() - started < 0.5


@pytest.mark.parametrize("body", WRONG_BODIES)
def test_bank_tests_fail_against_a_trivially_wrong_solution(body: str) -> None:
    vacuous = []
    for task in BANK:
        wrong = f"def {task.entry_point}(*args, **kwargs):\n    {body}\n"
        try:
            _run(wrong, task.tests)
        except Exception:
            continue
        vacuous.append(task.task_id)
    assert vacuous == []


def test_reference_solution_survives_the_teacher_reply_round_trip() -> None:
    task = next(t for t in BANK if t.entry_point == "balanced_brackets")
    reply = f"Here is my solution:\n```python\n{SOLUTIONS[task.task_id]}```\nIt uses a stack."
    _run(extract_code(reply), task.tests)


# ---------------------------------------------------------------- the Task model


def test_task_defaults_and_frozen() -> None:
    task = Task.model_validate(_task_dict())
    assert task.difficulty == "medium"
    assert task.tags == []
    with pytest.raises(ValidationError):
        task.description = "changed"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("overrides", "field", "expected"),
    [
        ({"task_id": "has space"}, "task_id", "should match pattern"),
        ({"task_id": "x" * 121}, "task_id", "at most 120 characters"),
        (
            {"entry_point": "class", "signature": "def class(a):"},
            "entry_point",
            "not a valid Python function name",
        ),
        ({"signature": "def plus(a: int, b: int) -> int:"}, "", "signature must start with 'def add('"),
        ({"signature": "def add(a: int,, b) -> int:"}, "", "signature is not a valid function header"),
        ({"tests": "assert add(1, 2) == 3 +"}, "tests", "not valid Python"),
        ({"tests": "assert 1 + 2 == 3"}, "", "tests never mention the entry point 'add'"),
        ({"description": "   "}, "description", "must not be blank"),
        ({"description": "x" * 4001}, "description", "at most 4000 characters"),
        ({"difficulty": "trivial"}, "difficulty", "'easy', 'medium' or 'hard'"),
        ({"solution": "def add(a, b): ..."}, "solution", "Extra inputs are not permitted"),
    ],
)
def test_task_rejects_invalid_fields(overrides: dict[str, Any], field: str, expected: str) -> None:
    with pytest.raises(ValidationError) as info:
        Task.model_validate(_task_dict(**overrides))
    [error] = info.value.errors()
    assert ".".join(str(part) for part in error["loc"]) == field
    assert expected in error["msg"]


# ---------------------------------------------------------------- load_jsonl


def test_load_jsonl_reads_tasks_skipping_blank_and_comment_lines(tmp_path: Path) -> None:
    path = _write_lines(
        tmp_path,
        "# my tasks",
        json.dumps(_task_dict()),
        "",
        json.dumps(_task_dict(task_id="user/add2", difficulty="easy", tags=["math"])),
    )
    tasks = load_jsonl(str(path))
    assert [t.task_id for t in tasks] == ["user/add", "user/add2"]
    assert tasks[1].difficulty == "easy"
    assert tasks[1].tags == ["math"]
    assert load_jsonl(path) == tasks


def test_load_jsonl_counts_lines_like_an_editor(tmp_path: Path) -> None:
    path = tmp_path / "tasks.jsonl"
    odd = json.dumps(_task_dict(description="Return a plus b.\u2028Really."), ensure_ascii=False)
    path.write_bytes(f"{odd}\r\n\r\n{{broken\r\n".encode())
    assert f"{path}:3: invalid JSON" in _load_error(path)


def test_load_jsonl_reports_bad_json_with_its_line_number(tmp_path: Path) -> None:
    path = _write_lines(tmp_path, json.dumps(_task_dict()), "# comment", '{"task_id": "oops",')
    message = _load_error(path)
    assert f"{path}:3: invalid JSON" in message


def test_load_jsonl_reports_a_missing_field(tmp_path: Path) -> None:
    fields = _task_dict()
    del fields["entry_point"]
    path = _write_lines(tmp_path, json.dumps(fields))
    message = _load_error(path)
    assert f"{path}:1: invalid task: entry_point: Field required" in message


def test_load_jsonl_reports_an_invalid_signature(tmp_path: Path) -> None:
    path = _write_lines(tmp_path, json.dumps(_task_dict(signature="add(a, b)")))
    message = _load_error(path)
    assert f"{path}:1: invalid task:" in message
    assert "signature must start with 'def add('" in message


def test_load_jsonl_reports_tests_that_do_not_compile(tmp_path: Path) -> None:
    path = _write_lines(tmp_path, json.dumps(_task_dict(tests="assert add(1, 2) ==")))
    assert f"{path}:1: invalid task: tests: not valid Python" in _load_error(path)


def test_load_jsonl_reports_duplicate_ids_with_both_lines(tmp_path: Path) -> None:
    line = json.dumps(_task_dict())
    path = _write_lines(tmp_path, line, "", line)
    message = _load_error(path)
    assert f"{path}:3: duplicate task_id 'user/add' (first defined on line 1)" in message


def test_load_jsonl_collects_every_problem_before_raising(tmp_path: Path) -> None:
    path = _write_lines(tmp_path, "[1, 2]", json.dumps(_task_dict()), "not json")
    message = _load_error(path)
    assert "2 problem(s)" in message
    assert f"{path}:1: expected a JSON object, got list" in message
    assert f"{path}:3: invalid JSON" in message


def test_load_jsonl_rejects_empty_and_missing_files(tmp_path: Path) -> None:
    assert "contains no tasks" in _load_error(_write_lines(tmp_path, "# nothing yet"))
    assert "cannot read task file" in _load_error(tmp_path / "absent.jsonl")


# ---------------------------------------------------------------- tasks_for_round


def test_tasks_for_round_is_deterministic_and_seeded() -> None:
    first = tasks_for_round(BANK, round_no=2, count=10, seed=7)
    assert first == tasks_for_round(list(BANK), round_no=2, count=10, seed=7)
    assert first != tasks_for_round(BANK, round_no=2, count=10, seed=8)
    assert len(first) == 10


def test_tasks_for_round_walks_the_whole_pool_in_consecutive_windows() -> None:
    count = 10
    rounds = [tasks_for_round(BANK, r, count, seed=3) for r in range(len(BANK) // count)]
    seen = [task.task_id for window in rounds for task in window]
    assert len(seen) == len(set(seen))
    assert rounds[0] + rounds[1] == tasks_for_round(BANK, 0, 2 * count, seed=3)
    covered = {t.task_id for r in range(-(-len(BANK) // count)) for t in tasks_for_round(BANK, r, count, 3)}
    assert covered == {task.task_id for task in BANK}


def test_tasks_for_round_repeats_tasks_when_count_exceeds_the_pool() -> None:
    pool = BANK[:3]
    picked = tasks_for_round(pool, round_no=1, count=7, seed=0)
    assert len(picked) == 7
    assert {t.task_id for t in picked[:3]} == {t.task_id for t in pool}
    assert picked[3:6] == picked[:3]


def test_tasks_for_round_rejects_bad_arguments() -> None:
    assert tasks_for_round([], round_no=1, count=0, seed=0) == []
    with pytest.raises(TaskSourceError, match="empty"):
        tasks_for_round([], round_no=1, count=1, seed=0)
    with pytest.raises(ValueError, match="count"):
        tasks_for_round(BANK, round_no=1, count=-1, seed=0)
    with pytest.raises(ValueError, match="round_no"):
        tasks_for_round(BANK, round_no=-1, count=1, seed=0)


# ---------------------------------------------------------------- self-instruct


def _proposal(**overrides: Any) -> dict[str, Any]:
    fields = _task_dict(**overrides)
    del fields["task_id"]
    return fields


def test_self_instruct_messages_show_the_examples_and_the_format() -> None:
    examples = BANK[:3]
    messages = build_self_instruct_messages(examples, round_no=2, index=5)
    assert [m["role"] for m in messages] == ["system", "user"]
    user = messages[1]["content"]
    assert "ONE new Python programming task" in SELF_INSTRUCT_PROMPT
    for example in examples:
        assert json.dumps(example.signature) in user
        assert example.task_id not in user
    for key in ("entry_point", "signature", "description", "tests", "difficulty", "tags"):
        assert f'"{key}"' in user
    assert user != build_self_instruct_messages(examples, round_no=2, index=6)[1]["content"]
    with pytest.raises(ValueError, match="example"):
        build_self_instruct_messages([], round_no=1, index=0)


def test_an_example_line_from_the_prompt_parses_back_into_a_task() -> None:
    user = build_self_instruct_messages(BANK[:1], round_no=1, index=0)[1]["content"]
    example_line = next(line for line in user.splitlines() if line.startswith("{"))
    task = parse_proposed_task(example_line, "self/r1_0")
    assert task.model_dump(exclude={"task_id"}) == BANK[0].model_dump(exclude={"task_id"})


def test_parse_proposed_task_reads_a_fenced_reply_with_prose() -> None:
    reply = f"Sure! Here is a new task:\n```json\n{json.dumps(_proposal(), indent=2)}\n```\nHope it helps."
    task = parse_proposed_task(reply, "self/r1_000")
    assert task.task_id == "self/r1_000"
    assert task.entry_point == "add"


def test_parse_proposed_task_reads_an_unfenced_reply_and_overrides_its_id() -> None:
    reply = "I propose {the following}: " + json.dumps(_proposal(task_id="bank/001_clash")) + " -- done"
    task = parse_proposed_task(reply, "self/r2_003")
    assert task.task_id == "self/r2_003"


def test_parse_proposed_task_joins_tests_given_as_a_list() -> None:
    reply = json.dumps(_proposal(tests=["assert add(1, 1) == 2", "assert add(2, 2) == 4"]))
    assert parse_proposed_task(reply, "self/x").tests == "assert add(1, 1) == 2\nassert add(2, 2) == 4"


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("I cannot think of a task right now.", "no JSON object found"),
        ('```json\n{"entry_point": "add", "signature": \n```', "no JSON object found"),
        (json.dumps({"entry_point": "add"}), "signature: Field required"),
        (json.dumps(_proposal(signature="def other(a, b):")), "signature must start with 'def add('"),
        (json.dumps(_proposal(tests="print(add(1, 2))")), "no assert statement"),
        (json.dumps(_proposal(tests="assert add(1,")), "tests: not valid Python"),
        (json.dumps(_proposal(solution="def add(a, b): return a + b")), "solution: Extra inputs"),
    ],
)
def test_parse_proposed_task_explains_why_a_reply_is_unusable(reply: str, expected: str) -> None:
    with pytest.raises(TaskSourceError, match=r"^proposed task self/bad: ") as info:
        parse_proposed_task(reply, "self/bad")
    assert expected in str(info.value)


# ---------------------------------------------------------------- solution prompts and extract_code


def test_solution_messages_carry_the_instruction() -> None:
    task = BANK[0]
    messages = build_solution_messages(task)
    assert messages == [
        {"role": "system", "content": SOLUTION_SYSTEM_PROMPT},
        {"role": "user", "content": instruction_text(task)},
    ]
    assert SOLUTION_SYSTEM_PROMPT == (
        "You are an expert Python programmer. Reply with only the complete function in one ```python code block."
    )
    text = instruction_text(task)
    assert text.startswith(task.description)
    assert text.endswith(task.signature)


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("Here:\n```python\ndef f():\n    return 1\n```\nDone.", "def f():\n    return 1"),
        ("```\ndef g(x):\n    return x\n```", "def g(x):\n    return x"),
        ("```py\nx = 1\n```", "x = 1"),
        ("```bash\npip install nothing\n```\nthen\n```python\ny = 2\n```", "y = 2"),
        ("```python\na = 1\n```\n```python\nb = 2\n```", "a = 1"),
        ("```text\nnotes\n```\n```\nz = 3\n```", "z = 3"),
        ("  def h():\n    return 0\n  ", "def h():\n    return 0"),
        ("```python\ndef cut_off(x):\n    return x +", "def cut_off(x):\n    return x +"),
        ("```python\n    def indented():\n        pass\n```", "def indented():\n    pass"),
        ("", ""),
    ],
    ids=["python", "bare", "py", "skips-bash", "first", "skips-text", "plain", "unclosed", "dedent", "empty"],
)
def test_extract_code(reply: str, expected: str) -> None:
    assert extract_code(reply) == expected
