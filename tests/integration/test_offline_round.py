"""One offline round of generate + validate: the packaged SmolLM2 as an in-process teacher, no network.

The real generate and validate agents run under a real supervisor (train and eval are the scripted
no-op agent); the unit-test gate runs the model's code in the sandbox. What the small model writes is not
predictable, so the test checks that every sample is accounted for exactly once at every step.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from harness import SupervisorProc, agent_env, scripted

from heidi_engine.agents.dataset.samples import read_jsonl_skipping_bad
from heidi_engine.agents.dataset.tasks import instruction_text, load_bank, tasks_for_round
from heidi_engine.agents.layout import RoundFiles

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]

TEACHER = "local:smollm2-135m-instruct"


def test_one_offline_round_accounts_for_every_sample(
    start_supervisor: Callable[..., SupervisorProc], home: Path
) -> None:
    pytest.importorskip("transformers")
    pytest.importorskip("gguf")
    config = {
        "ROUNDS": 1,
        "SAMPLES_PER_ROUND": 3,
        "TEACHER_MODEL": TEACHER,
        "TEACHER_MAX_TOKENS": 96,
        "RUN_UNIT_TESTS": "1",
        "VAL_RATIO": 0.0,  # no held-out tasks: the round asks for exactly its own three
        "AGENT_HEARTBEAT_TIMEOUT_S": 120.0,
    }
    env = {
        **agent_env(scripted("--events", "0"), generate="", validate=""),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }
    sup = start_supervisor(env=env, config="".join(f"{k}: {json.dumps(v)}\n" for k, v in config.items()))
    run_id = sup.wait_ready().call("start")["run_id"]
    final = sup.wait_status("completed", "failed", timeout_s=360)
    assert final["status"] == "completed", sup.output()
    files = RoundFiles.of(home / "runs" / run_id, 1)
    raw = read_jsonl_skipping_bad(files.raw)
    expected = tasks_for_round(load_bank(), 1, 3, 42)
    assert [row["id"] for row in sorted(raw, key=lambda r: r["id"])] == ["r1-00000", "r1-00001", "r1-00002"]
    assert {row["metadata"]["teacher_model"] for row in raw} == {TEACHER}
    assert {row["instruction"] for row in raw} == {instruction_text(task) for task in expected}

    c, usage = final["counters"], final["usage"]
    assert c["teacher_generated"] == len(raw) and c["teacher_generated"] + c["teacher_failed"] == 3
    rejected = c["rejected_schema"] + c["rejected_secret"] + c["rejected_dedup"]
    assert c["validated_ok"] + rejected == c["teacher_generated"]
    assert c["test_pass"] + c["test_fail"] == c["validated_ok"] == len(read_jsonl_skipping_bad(files.clean))
    assert len(read_jsonl_skipping_bad(files.tested)) == c["test_pass"]
    assert len(read_jsonl_skipping_bad(files.train)) + len(read_jsonl_skipping_bad(files.val)) == c["test_pass"]
    assert usage["requests_sent"] == 3 and usage["estimated_cost_usd"] == 0.0
    assert usage["input_tokens"] > 0 and 0 < usage["output_tokens"] <= 3 * 96
    assert sum(row["metadata"]["usage"]["output_tokens"] for row in raw) == usage["output_tokens"]
