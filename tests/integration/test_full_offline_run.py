"""One full offline AutoTrain run through the real supervisor with the shipped config.yaml:
generate (local SmolLM2 teacher) → validate with the unit-test gate → LoRA train → eval."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from harness import SupervisorProc

from heidi_engine.agents.dataset.heldout import answered_by_reference
from heidi_engine.bus.config import load_config
from heidi_engine.bus.event import COUNTER_NAMES, Event
from heidi_engine.bus.journal import event_files, iter_lines
from heidi_engine.bus.redaction import Redactor

ROOT = Path(__file__).resolve().parents[2]
PLANTED_KEY = "sk-proj-Zq8vN3kT5wB1xY7mL2pR9sD4fG6hJ0cV"
Start = Callable[..., SupervisorProc]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(1200),
    # peft 0.21 on transformers 5.24 asks for a deprecated attribute whenever it wraps a model.
    pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning"),
]


def test_full_offline_run(start_supervisor: Start, home: Path) -> None:
    shutil.copy(ROOT / "config.yaml", home / "config.yaml")
    config = load_config(home / "config.yaml", env={})
    assert config.TEACHER_MODEL.startswith("local:") and config.RUN_UNIT_TESTS == "1"
    # A key in the environment must never reach any file of the run.
    sup = start_supervisor(env={"OPENAI_API_KEY": PLANTED_KEY, "HF_HUB_OFFLINE": "1"}).wait_ready()
    run_id = sup.call("start")["run_id"]
    final = sup.wait_status("completed", "failed", "stopped", timeout_s=1100)
    run_dir = home / "runs" / run_id
    assert final["status"] == "completed", (final, _logs(run_dir))

    # Every line a valid v1.0 event; every stage started and ended.
    events = [Event.model_validate(json.loads(line)) for path in event_files(run_dir) for line in iter_lines(path)]
    seen = {(e.round, e.stage, e.event_type) for e in events}
    for stage in ("generate", "validate", "train", "eval"):
        assert (1, stage, "stage_start") in seen and (1, stage, "stage_end") in seen, stage
    assert events[0].event_type == "pipeline_start" and events[-1].event_type == "pipeline_complete"

    # state.json counters equal the sums of counters_delta.
    state = json.loads((run_dir / "state.json").read_text())
    sums = dict.fromkeys(COUNTER_NAMES, 0)
    for event in events:
        for name, delta in event.counters_delta.items():
            sums[name] += delta
    assert state["counters"] == sums
    counters = state["counters"]
    # The held-out tasks are answered once, in the round that fixed them (round 1), besides its samples.
    heldout = json.loads((run_dir / "heldout.json").read_text())
    # The teacher answers the round's samples and the held-out tasks no verified reference answers.
    asked = [task for task in heldout if task not in answered_by_reference(config.TASK_SOURCE)]
    assert counters["teacher_generated"] + counters["teacher_failed"] == config.SAMPLES_PER_ROUND + len(asked)
    assert counters["train_step"] == config.TRAIN_STEPS

    # Artifacts on disk.
    data = run_dir / "data" / "round_1"
    for name in ("raw", "clean", "tested", "train", "val"):
        assert (data / f"{name}.jsonl").exists(), name
    adapter = run_dir / "out_lora_round_1"
    assert (adapter / "adapter_config.json").exists()
    report = json.loads((run_dir / "eval" / "report_round_1.json").read_text())
    # Every held-out bank task is scored against its verified reference solution, however weak the teacher:
    # the held-out set has rows, both variants a val loss, and the round is recorded as best.
    val_rows = [json.loads(line) for line in iter_lines(data / "val.jsonl")]
    assert sorted(row["metadata"]["task_id"] for row in val_rows) == sorted(heldout) and heldout, val_rows
    assert report["adapter"]["n_val"] == min(len(heldout), config.EVAL_SAMPLES), report
    for side in ("base", "adapter"):
        assert isinstance(report[side]["val_loss"], float), report
    assert state["best_adapter"]
    # The held-out tasks never reached training.
    trained = {json.loads(line)["metadata"]["task_id"] for line in iter_lines(data / "train.jsonl")}
    assert not trained & set(heldout)

    # The adapter loads onto the packaged base model.
    from peft import PeftModel

    from heidi_engine.agents.student import load_model_and_tokenizer

    model, _tokenizer = load_model_and_tokenizer(config.BASE_MODEL)
    loaded = PeftModel.from_pretrained(model, str(adapter))
    assert any("lora_" in name for name, _ in loaded.named_parameters())

    # No secret anywhere in the run folder: not the planted key, not anything the rule table finds.
    redactor = Redactor(env={})
    for path in run_dir.rglob("*"):
        if not path.is_file():
            continue
        raw = path.read_bytes()
        assert PLANTED_KEY.encode() not in raw, path
        if path.suffix in (".json", ".jsonl", ".log", ".txt") or path.name.startswith("events.jsonl"):
            found = redactor.scan(raw.decode("utf-8", errors="replace"))
            assert not found, (path, found)


def _logs(run_dir: Path) -> str:
    return "\n".join(f"== {p.name}\n{p.read_text(errors='replace')[-1500:]}" for p in sorted((run_dir / "logs").glob("*.log")))
