"""A user's own HF Trainer with ``bus_callback()`` beside a run: it reports as itself, never as the run.

One script starts while the run generates and goes on through the run's training; another starts while
the pipeline's own train stage trains. The pipeline's train stage is a scripted agent that counts each
step once, resuming from what the ledger says it counted (as the real one does): if an external script's
steps were taken for the stage's, it would skip its own.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

from harness import USER_TRAIN_SCRIPT, SupervisorProc, agent_env, scripted, wait_until

from heidi_engine.bus.journal import read_events, read_samples
from heidi_engine.bus.state import TrainerSample

OWN_STEPS = 30
FIRST_STEPS = 60
SECOND_STEPS = 20


def _script(home: Path, name: str, steps: int) -> subprocess.Popen[str]:
    path = home / f"{name}.py"
    path.write_text(USER_TRAIN_SCRIPT)
    env = {**os.environ, "AUTOTRAIN_HOME": str(home), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, str(path), str(home / f"out-{name}"), str(steps)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip


def _finished(proc: subprocess.Popen[str], sup: SupervisorProc) -> str:
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, f"the script exited {proc.returncode}:\n{out[-3000:]}\n{sup.evidence()}"
    assert "not reported" not in out, out[-3000:]
    return out


def test_training_scripts_beside_a_run_report_as_themselves_and_leave_its_counts_alone(home: Path) -> None:
    env = agent_env(
        scripted("--events", "0"),
        generate=scripted("--events", "60", "--delay", "0.1"),
        train=scripted("--events", str(OWN_STEPS), "--counter", "train_step", "--samples", "--delay", "0.5"),
    )  # fmt: skip
    sup = SupervisorProc(home, env=env, config="ROUNDS: 1\n").wait_ready()
    first = second = None
    try:
        run_id = sup.call("start")["run_id"]
        wait_until(lambda: sup.status()["current_stage"] == "generate", 30, 0.05, "generate", sup.evidence)
        first = _script(home, "first", FIRST_STEPS)  # starts while the run generates, trains through its train
        wait_until(lambda: sup.status()["current_stage"] == "train", 60, 0.1, "the run's train stage", sup.evidence)
        second = _script(home, "second", SECOND_STEPS)  # starts while the pipeline trains
        _finished(first, sup)
        _finished(second, sup)
        snapshot = sup.call("snapshot")["state"]
        final = sup.wait_status("completed", "failed", timeout_s=120)
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.kill()
        sup.stop()
    assert final["status"] == "completed", sup.evidence()
    # The run counted its own steps, every one, however many the scripts made beside it.
    assert final["counters"]["train_step"] == OWN_STEPS, final["counters"]
    assert {k: v["step"] for k, v in final["external"].items()} == {"external:first": FIRST_STEPS,
                                                                     "external:second": SECOND_STEPS}
    run_dir = home / "runs" / run_id
    samples = [s for s in read_samples(run_dir) if isinstance(s, TrainerSample)]
    by_source = Counter(s.source for s in samples)
    assert by_source == {"": OWN_STEPS, "external:first": FIRST_STEPS, "external:second": SECOND_STEPS}, by_source
    assert [s.step for s in samples if s.source == ""] == list(range(1, OWN_STEPS + 1))
    assert [s.step for s in samples if s.source == "external:first"] == list(range(1, FIRST_STEPS + 1))
    # Every viewer's state shows the scripts as themselves, the pipeline's trainer as its own.
    external = snapshot["external"]
    assert external["external:first"]["step"] == FIRST_STEPS and external["external:second"]["step"] == SECOND_STEPS
    assert snapshot["trainer"]["total"] == OWN_STEPS
    said = [e for e in read_events(run_dir) if e.stage == "external"]
    assert said and all(not e.counters_delta for e in said)
    assert any(e.message.startswith("first: trained to step") for e in said), [e.message for e in said][-5:]
    assert final["refused_events"].get("wrong_run", 0) == 0, final["refused_events"]
