"""The teacher is asked for no held-out task that a verified reference answers (in-process, fake teacher).

On the shipped bank every held-out task's validation row is its reference solution, so the teacher's
answer would be paid for and thrown away: generate sends exactly the round's own samples. A task file has
no references: its held-out tasks are still asked, once.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fakes.openai_server import FakeOpenAIServer
from harness import FileRuntime

from heidi_engine.agents import generate, validate
from heidi_engine.agents.dataset.heldout import REFERENCE_MODEL, heldout_count, read_heldout
from heidi_engine.agents.dataset.samples import read_jsonl_skipping_bad
from heidi_engine.agents.dataset.tasks import instruction_text, load_bank
from heidi_engine.agents.layout import RoundFiles, heldout_files
from heidi_engine.bus.config import AutoTrainConfig, load_config

pytestmark = pytest.mark.timeout(90)

SAMPLES = 6


def _config(url: str, source: str) -> AutoTrainConfig:
    values = {"TEACHER_BASE_URL": url, "SAMPLES_PER_ROUND": SAMPLES, "TEACHER_CONCURRENCY": 3, "VAL_RATIO": 0.1,
              "TASK_SOURCE": source, "RUN_UNIT_TESTS": "0"}  # fmt: skip
    return load_config(None, env={}, overrides={k: str(v) for k, v in values.items()})


def _asked(server: FakeOpenAIServer) -> list[str]:
    return [request.json()["messages"][-1]["content"] for request in server.requests]


def test_on_the_bank_the_requests_are_the_rounds_own_samples_and_no_heldout_task(tmp_path: Path) -> None:
    bank = {task.task_id: task for task in load_bank()}
    with FakeOpenAIServer() as server:
        config = _config(server.url, "bank")
        generate.main(FileRuntime(tmp_path, config, "generate"))  # type: ignore[arg-type]
        asked = _asked(server)
    heldout = read_heldout(tmp_path)
    assert heldout is not None and len(heldout) == heldout_count(len(bank), 0.1) == 9
    assert len(asked) == SAMPLES  # was SAMPLES + 9: nine answers paid for and replaced by references
    assert not {instruction_text(bank[task_id]) for task_id in heldout} & set(asked)
    raw = read_jsonl_skipping_bad(RoundFiles.of(tmp_path, 1).raw)
    assert len(raw) == SAMPLES and not {row["metadata"]["task_id"] for row in raw} & set(heldout)
    # Validation still has every held-out task: its reference solution.
    validate.main(FileRuntime(tmp_path, config, "validate"))  # type: ignore[arg-type]
    val = read_jsonl_skipping_bad(heldout_files(tmp_path).val)
    assert sorted(row["metadata"]["task_id"] for row in val) == sorted(heldout)
    assert {row["metadata"]["teacher_model"] for row in val} == {REFERENCE_MODEL}


def test_a_task_file_without_references_still_asks_for_its_heldout_tasks_once(tmp_path: Path) -> None:
    pool = [task for task in load_bank() if task.task_id < "bank/021"]
    (tmp_path / "tasks.jsonl").write_text("".join(json.dumps(task.model_dump()) + "\n" for task in pool))
    with FakeOpenAIServer() as server:
        config = _config(server.url, f"file:{tmp_path / 'tasks.jsonl'}")
        generate.main(FileRuntime(tmp_path, config, "generate"))  # type: ignore[arg-type]
        asked = _asked(server)
    heldout = read_heldout(tmp_path)
    assert heldout is not None and len(heldout) == heldout_count(len(pool), 0.1) == 2
    by_id = {task.task_id: task for task in pool}
    assert len(asked) == SAMPLES + 2
    assert [asked.count(instruction_text(by_id[task_id])) for task_id in heldout] == [1, 1]
