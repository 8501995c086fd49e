"""The held-out task set through a real supervisor: fixed for the run, answered once, never trained on.

Real generate and validate agents run three rounds with more samples per round than the pool has tasks
(so tasks repeat within and across rounds); the loopback teacher answers every task with its known
solution. Train and eval are scripted agents: what is checked here is which task lands in which file.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from data.task_solutions import SOLUTIONS
from fakes.openai_server import FakeOpenAIServer
from harness import SupervisorProc, agent_env, scripted

from heidi_engine.agents.dataset.heldout import choose_heldout
from heidi_engine.agents.dataset.samples import read_jsonl_skipping_bad
from heidi_engine.agents.dataset.tasks import instruction_text, load_bank
from heidi_engine.agents.layout import RoundFiles

pytestmark = pytest.mark.timeout(180)

Start = Callable[..., SupervisorProc]
POOL = [task for task in load_bank() if task.task_id < "bank/006"]


def knows_the_answers(request: dict[str, Any]) -> str:
    asked = request["messages"][-1]["content"]
    task = next(task for task in POOL if instruction_text(task) == asked)
    return f"```python\n{SOLUTIONS[task.task_id]}```\n"


def task_ids(path: Path) -> list[str]:
    return [row["metadata"]["task_id"] for row in read_jsonl_skipping_bad(path)]


def test_three_rounds_keep_the_heldout_set_fixed_and_out_of_training(start_supervisor: Start, home: Path) -> None:
    assert len(POOL) == 5
    (home / "tasks.jsonl").write_text("".join(json.dumps(task.model_dump()) + "\n" for task in POOL))
    config = {
        "ROUNDS": 3,
        "SAMPLES_PER_ROUND": 7,  # more than the pool: tasks repeat within a round
        "TEACHER_CONCURRENCY": 2,
        "TEACHER_MODEL": "gpt-4o-mini",
        "TASK_SOURCE": "file:tasks.jsonl",
        "VAL_RATIO": 0.3,
        "RUN_UNIT_TESTS": "0",
    }
    env = {**agent_env(scripted("--events", "0"), generate="", validate=""), "OPENAI_API_KEY": "sk-test-x1"}
    with FakeOpenAIServer(responder=knows_the_answers) as server:
        config["TEACHER_BASE_URL"] = server.url
        sup = start_supervisor(env=env, config="".join(f"{k}: {json.dumps(v)}\n" for k, v in config.items()))
        run_id = sup.wait_ready().call("start")["run_id"]
        path = home / "runs" / run_id / "heldout.json"
        deadline = time.monotonic() + 60
        while not path.exists() and time.monotonic() < deadline:
            time.sleep(0.02)  # polling for the file's first appearance, not synchronising on time
        assert path.exists(), sup.output()
        before = (path.read_bytes(), path.stat().st_mtime_ns)
        final = sup.wait_status("completed", "failed", timeout_s=150)
        requests = len(server.requests)
    assert final["status"] == "completed", sup.output()
    run_dir = home / "runs" / run_id
    assert (path.read_bytes(), path.stat().st_mtime_ns) == before
    heldout = json.loads(before[0])
    assert heldout == choose_heldout([task.task_id for task in POOL], 0.3, 42)
    assert len(heldout) == 2  # ceil(0.3 * 5)
    # Three rounds of seven samples, and the two held-out tasks answered once for the whole run.
    assert requests == 3 * 7 + 2
    val_sets = []
    for round_no in (1, 2, 3):
        files = RoundFiles.of(run_dir, round_no)
        raw = task_ids(files.raw)
        assert len(raw) == 7 + (2 if round_no == 1 else 0)
        if round_no > 1:
            assert not set(raw) & set(heldout), f"round {round_no} asked for a held-out task again"
        train, val = task_ids(files.train), task_ids(files.val)
        assert train or round_no > 1, "round 1 trained on nothing"  # later rounds repeat it: duplicates
        assert not set(train) & set(heldout), f"round {round_no} trains on a held-out task"
        assert set(val) == set(heldout), f"round {round_no} validates on {val}"
        val_sets.append(files.val.read_bytes())
    assert val_sets[0] == val_sets[1] == val_sets[2]
