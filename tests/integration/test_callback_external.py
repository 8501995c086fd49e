"""A user's own HF Trainer script, with the two documented lines, reporting to a running supervisor.

The script is a plain subprocess (not started by the supervisor): it finds the supervisor through
``AUTOTRAIN_HOME`` and reports beside the active run, as the external trainer ``external:user_train``, while
the run's own stages are slow scripted agents. Its steps are its own: never the run's ``train_step``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from harness import USER_TRAIN_SCRIPT as SCRIPT
from harness import SupervisorProc, agent_env, scripted, wait_until

from heidi_engine.bus.journal import read_events, read_samples
from heidi_engine.bus.state import TrainerSample

Start = Callable[..., SupervisorProc]
STEPS = 5
SOURCE = "external:user_train"


def run_script(tmp_path: Path, home: Path) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "user_train.py"
    script.write_text(SCRIPT)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTOTRAIN_")}
    env.update({"AUTOTRAIN_HOME": str(home), "OMP_NUM_THREADS": "1"})
    return subprocess.run(
        [sys.executable, str(script), str(tmp_path / "out"), str(STEPS)],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=240,
    )  # fmt: skip


def test_an_external_trainer_reports_into_the_active_run(
    start_supervisor: Start, home: Path, tmp_path: Path
) -> None:
    slow = scripted("--events", "2000", "--delay", "0.05")
    sup = start_supervisor(env=agent_env(slow)).wait_ready()
    run_id = sup.call("start")["run_id"]
    sup.wait_status("running")
    result = run_script(tmp_path, home)
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = home / "runs" / run_id

    def samples() -> list[TrainerSample]:
        return [s for s in read_samples(run_dir) if isinstance(s, TrainerSample)]

    wait_until(lambda: len(samples()) >= STEPS, 15, 0.05, "the script's samples in metrics.jsonl")
    assert [s.step for s in samples()] == list(range(1, STEPS + 1))
    assert all(s.round == 1 and s.total == STEPS and s.loss is not None and s.source == SOURCE for s in samples())
    final_loss = float(result.stdout.split("final loss")[-1])
    assert abs(samples()[-1].loss - final_loss) < 1e-6  # type: ignore[operator]
    state = sup.call("snapshot")["state"]
    assert state["external"][SOURCE]["step"] == STEPS and state["external"][SOURCE]["total"] == STEPS
    assert state["trainer"]["step"] == 0  # the run's own trainer has not trained
    # Its last progress (flushed when training ends, before the script exits) is its own, and counts nothing.
    said = wait_until(lambda: [e for e in read_events(run_dir) if e.stage == "external"], 10, 0.05, "its events")
    assert all(e.round == 1 and e.run_id == run_id and not e.counters_delta for e in said)
    assert said[-1].message.startswith(f"user_train: trained to step {STEPS}/{STEPS}"), said[-1].message
    status = sup.status()
    assert status["counters"]["train_step"] == 0 and status["external"][SOURCE]["step"] == STEPS
    assert status["status"] == "running"  # the run's own stages go on
    sup.call("stop")
    sup.wait_status("stopped")


def test_without_a_supervisor_the_script_trains_and_warns_once(home: Path, tmp_path: Path) -> None:
    result = run_script(tmp_path, home)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "final loss" in result.stdout
    warnings = [line for line in result.stderr.splitlines() if "trainer metrics are not reported" in line]
    assert len(warnings) == 1 and "no supervisor connection file" in warnings[0]


def test_a_supervisor_without_an_active_run_is_ignored(
    start_supervisor: Start, home: Path, tmp_path: Path
) -> None:
    sup = start_supervisor().wait_ready()
    result = run_script(tmp_path, home)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "has no active run" in result.stderr
    assert sup.status()["run_id"] is None
    assert not (home / "runs").exists() or not any((home / "runs").iterdir())
    assert sup.call("snapshot")["state"]["trainer"]["step"] == 0


# Two ranks share the launcher's stdout: each rank's line goes out in one write (print() writes its
# pieces separately once the launcher makes stdout unbuffered, and the ranks' pieces then interleave).
RANKED = SCRIPT.replace("use_cpu=True,", 'use_cpu=True, ddp_backend="gloo",').replace(
    'print("final loss", ', 'sys.stdout.write("rank %d final loss %s\\n" % (trainer.args.process_index, '
).replace("[-1])", "[-1])); sys.stdout.flush()")


LAUNCHERS = {
    "torchrun": [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"],
    # accelerate's multi-process launcher (--cpu would start one process); gloo on a machine without CUDA.
    "accelerate": [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--num_machines",
                   "1", "--main_process_port", "0", "--mixed_precision", "no", "--multi_gpu"],
}  # fmt: skip


@pytest.mark.parametrize("launcher", sorted(LAUNCHERS))
def test_a_script_under_torchrun_or_accelerate_reports_each_step_once_from_rank_0(
    start_supervisor: Start, home: Path, tmp_path: Path, launcher: str
) -> None:
    slow = scripted("--events", "2000", "--delay", "0.05")
    sup = start_supervisor(env=agent_env(slow)).wait_ready()
    run_id = sup.call("start")["run_id"]
    sup.wait_status("running")
    script = tmp_path / "user_train.py"
    script.write_text(RANKED)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTOTRAIN_")}
    env.update({"AUTOTRAIN_HOME": str(home), "OMP_NUM_THREADS": "1"})
    command = [*LAUNCHERS[launcher], str(script), str(tmp_path / "out"), str(STEPS)]
    result = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "rank 0 final loss" in result.stdout and "rank 1 final loss" in result.stdout
    run_dir = home / "runs" / run_id
    wait_until(lambda: (sup.status()["external"].get(SOURCE) or {}).get("step") == STEPS, 15, 0.05,
               "the script's last step shown", evidence=lambda: result.stderr[-3000:])  # fmt: skip
    samples = [s for s in read_samples(run_dir) if isinstance(s, TrainerSample)]
    # Each step once: rank 1 stayed off the bus (no warning from it, no sample of its own).
    assert [s.step for s in samples] == list(range(1, STEPS + 1)) and {s.source for s in samples} == {SOURCE}
    assert "trainer metrics are not reported" not in result.stderr
    assert sup.status()["counters"]["train_step"] == 0
    sup.call("stop")
    sup.wait_status("stopped")
