"""The held-out set: its size, its draw, its file, its reference rows, and a task bank kept apart from HumanEval."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from heidi_engine.agents.dataset.heldout import (
    HeldoutError,
    answered_by_reference,
    choose_heldout,
    fix_heldout,
    heldout_count,
    humaneval_overlaps,
    read_heldout,
    reference_rows,
    reference_solutions,
    split_pool,
    with_references,
)
from heidi_engine.agents.dataset.humaneval import load_problems
from heidi_engine.agents.dataset.samples import Sample
from heidi_engine.agents.dataset.tasks import instruction_text, load_bank

IDS = [f"t/{i:03d}" for i in range(20)]


@pytest.mark.parametrize(
    ("pool", "ratio", "held"),
    [(0, 0.5, 0), (1, 0.5, 0), (2, 0.01, 1), (5, 0.3, 2), (10, 0.1, 1), (10, 0.11, 2), (10, 0.0, 0), (10, 1.0, 9)],
)
def test_heldout_count_is_the_ceiling_at_least_one_and_leaves_a_task_to_train(pool: int, ratio: float, held: int) -> None:
    assert heldout_count(pool, ratio) == held


def test_heldout_count_refuses_a_ratio_out_of_range() -> None:
    with pytest.raises(ValueError, match="val_ratio"):
        heldout_count(10, 1.5)


def test_the_draw_depends_on_the_seed_not_on_order_or_repeats() -> None:
    once = choose_heldout(IDS, 0.25, 7)
    assert len(once) == 5 and set(once) <= set(IDS)
    assert choose_heldout(list(reversed(IDS)) + IDS[:3], 0.25, 7) == once
    assert choose_heldout(IDS, 0.25, 8) != once


def test_fix_records_once_and_reuses_what_is_recorded(tmp_path: Path) -> None:
    assert read_heldout(tmp_path) is None
    first = fix_heldout(tmp_path, IDS, 0.25, 7)
    assert json.loads((tmp_path / "heldout.json").read_text()) == first
    # A later round (or a resume) sees another pool or ratio, and still gets the recorded set.
    assert fix_heldout(tmp_path, IDS[:4], 0.9, 1) == first
    assert (tmp_path / "heldout.json").stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("text", ["{not json", '{"a": 1}', "[1, 2]"])
def test_a_damaged_heldout_file_is_an_error_naming_it(tmp_path: Path, text: str) -> None:
    (tmp_path / "heldout.json").write_text(text)
    with pytest.raises(HeldoutError, match=r"heldout\.json"):
        fix_heldout(tmp_path, IDS, 0.25, 7)


def test_the_shipped_bank_is_clean_of_humaneval() -> None:
    problems = [(problem.task_id, problem.prompt) for problem in load_problems()]
    bank = [(task.task_id, task.signature, task.description) for task in load_bank()]
    assert humaneval_overlaps(bank, problems) == {}


def test_a_humaneval_lookalike_is_found_by_signature_or_by_description() -> None:
    problems = [(problem.task_id, problem.prompt) for problem in load_problems()]
    is_prime = next(p for p in load_problems() if p.entry_point == "is_prime")
    tasks = [
        ("mine/prime", "def is_prime(k: int) -> bool:", "Is k prime?"),
        ("mine/reworded", "def check_number(x):", is_prime.prompt.split('"""')[1]),
        ("mine/other", "def swap_pairs(xs: list[int]) -> list[int]:", "Swap neighbouring pairs of xs."),
    ]
    assert humaneval_overlaps(tasks, problems) == {"mine/prime": is_prime.task_id, "mine/reworded": is_prime.task_id}


def test_held_out_bank_tasks_get_their_reference_solution_as_a_valid_sample_row() -> None:
    bank = {task.task_id: task for task in load_bank()}
    assert set(reference_solutions()) == set(bank)
    wanted = ["bank/004_is_even", "user/not_in_the_bank", "bank/002_reverse_string"]
    rows = reference_rows(wanted, 1, "2026-01-01T00:00:00.000Z")
    assert [row["metadata"]["task_id"] for row in rows] == ["bank/004_is_even", "bank/002_reverse_string"]  # type: ignore[index]
    for row in rows:
        sample = Sample.model_validate(row)
        task = bank[sample.metadata.task_id]
        assert sample.instruction == instruction_text(task) and sample.tests == task.tests
        assert sample.output == reference_solutions()[task.task_id].strip("\n")
        assert sample.metadata.teacher_model == "reference"
    assert len({row["id"] for row in rows}) == 2


def test_the_reference_replaces_the_teachers_answer_and_other_answers_stay(tmp_path: Path) -> None:
    (tmp_path / "heldout.json").write_text(json.dumps(["bank/004_is_even", "file/own_task"]))
    teacher = [
        {"id": "r1-00001", "output": "def is_even(n): return True", "metadata": {"task_id": "bank/004_is_even"}},
        {"id": "r1-00002", "output": "def own(): pass", "metadata": {"task_id": "file/own_task"}},
    ]
    rows = with_references(tmp_path, teacher, 1)
    assert [(row["metadata"]["task_id"], row["output"]) for row in rows] == [  # type: ignore[index]
        ("bank/004_is_even", reference_solutions()["bank/004_is_even"].strip("\n")),
        ("file/own_task", "def own(): pass"),
    ]
    # Written again (a resumed stage), the rows are the same, timestamps included.
    assert with_references(tmp_path, teacher, 1) == rows


def test_on_the_bank_every_task_has_a_reference_and_no_other_source_has_any() -> None:
    assert answered_by_reference("bank") == {task.task_id for task in load_bank()}
    assert answered_by_reference("file:tasks.jsonl") == frozenset()
    assert answered_by_reference("self-instruct") == frozenset()


def test_split_pool_never_asks_for_a_heldout_task_a_reference_answers(tmp_path: Path) -> None:
    pool = load_bank()[:20]
    train, to_answer = split_pool(tmp_path, 1, pool, 0.2, 42, answered=answered_by_reference("bank"))
    heldout = read_heldout(tmp_path)
    assert heldout is not None and len(heldout) == 4 and to_answer == []
    assert {task.task_id for task in train} == {task.task_id for task in pool} - set(heldout)
    # Without references (a task file), the same held-out tasks are to be answered, in the recorded order.
    _, asked = split_pool(tmp_path, 1, pool, 0.2, 42)
    assert [task.task_id for task in asked] == heldout
    # A reference for some of them leaves the others to the teacher.
    _, asked = split_pool(tmp_path, 1, pool, 0.2, 42, answered={heldout[0], heldout[2]})
    assert [task.task_id for task in asked] == [heldout[1], heldout[3]]
