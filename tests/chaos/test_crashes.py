"""Kill -9 of agents and of the supervisor itself: restarts, bounded failure, recovery, exact counters."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from harness import SupervisorProc, agent_env, pid_alive, scripted, wait_until

from heidi_engine.bus.event import COUNTER_NAMES
from heidi_engine.bus.journal import read_events

Start = Callable[..., SupervisorProc]


def event_sums(run_dir: Path) -> dict[str, int]:
    sums = dict.fromkeys(COUNTER_NAMES, 0)
    for event in read_events(run_dir):
        for name, delta in event.counters_delta.items():
            sums[name] += delta
    return sums


def test_agent_killed_mid_stage_is_restarted_and_run_finishes(start_supervisor: Start, home: Path) -> None:
    sup = start_supervisor(
        env=agent_env(scripted("--events", "3"), train=scripted("--events", "60", "--delay", "0.03", "--counter", "train_step")),
        config="ROUNDS: 1\n",
    ).wait_ready()
    run_id = sup.call("start")["run_id"]
    run_dir = home / "runs" / run_id
    first = wait_until(lambda: list(run_dir.glob("agent_train_1_0.pid")), 30, what="train agent")[0]
    wait_until(lambda: sup.status()["counters"]["train_step"] >= 5, 20, what="train progress")
    os.kill(int(first.read_text()), signal.SIGKILL)
    done = sup.wait_status("completed", "failed", timeout_s=60)
    assert done["status"] == "completed", done
    assert done["counters"]["train_step"] == 60  # resumed after what was accepted: no double count
    messages = [e.message for e in read_events(run_dir) if e.stage == "train" and e.event_type == "error"]
    assert any("signal SIGKILL" in m and "restart 1/3 in 1 s" in m for m in messages), messages
    assert (run_dir / "agent_train_1_1.pid").exists()
    sup.stop()
    assert json.loads((run_dir / "state.json").read_text())["counters"] == event_sums(run_dir)


def test_always_crashing_agent_fails_run_after_bounded_tries(start_supervisor: Start, home: Path) -> None:
    sup = start_supervisor(
        env=agent_env(scripted("--events", "2"), validate=scripted("--always-crash")),
        config="ROUNDS: 2\nAGENT_MAX_RESTARTS: 2\n",
    ).wait_ready()
    run_id = sup.call("start")["run_id"]
    failed = sup.wait_status("failed", timeout_s=60)
    assert "validate agent failed 3 time(s); last: exit code 3" in failed["error"]
    events = list(read_events(home / "runs" / run_id))
    crashes = [e for e in events if e.stage == "validate" and e.event_type == "error"]
    assert [e.level for e in crashes] == ["warn", "warn", "error"]
    assert "restart 2/2 in 2 s" in crashes[1].message
    assert events[-1].event_type == "pipeline_stop" and events[-1].level == "error"
    assert not any(e.stage == "train" for e in events)


def test_supervisor_killed_mid_run_recovers_and_resumes(start_supervisor: Start, home: Path) -> None:
    env = agent_env(scripted("--events", "30", "--delay", "0.03"))
    sup = start_supervisor(env=env, config="ROUNDS: 1\n").wait_ready()
    run_id = sup.call("start")["run_id"]
    run_dir = home / "runs" / run_id
    wait_until(lambda: sup.status()["current_stage"] == "validate" and sup.status()["counters"]["teacher_generated"] >= 35,
               60, what="validate in progress")
    agent_pids = [int(p.read_text()) for p in run_dir.glob("agent_*.pid")]
    sup.kill9()
    # PDEATHSIG: no agent outlives its supervisor.
    wait_until(lambda: not any(pid_alive(pid) for pid in agent_pids), 10, what="agents dead")
    with open(run_dir / "events.jsonl", "ab") as handle:
        handle.write(b'{"event_version":"1.0","ts":"2026-')  # a torn last line, as a kill mid-write leaves
    assert json.loads((run_dir / "state.json").read_text())["status"] in ("running", "starting")

    again = start_supervisor(env=env).wait_ready()
    runs = again.call("list_runs")
    assert runs[0]["run_id"] == run_id and runs[0]["status"] == "interrupted"
    assert (run_dir / "events.jsonl").read_bytes().endswith(b"\n")
    assert again.call("resume_run")["run_id"] == run_id
    done = again.wait_status("completed", timeout_s=90)
    assert done["run_id"] == run_id
    assert done["counters"]["teacher_generated"] == 4 * 30
    again.stop()
    assert json.loads((run_dir / "state.json").read_text())["counters"] == event_sums(run_dir)
    starts = [e for e in read_events(run_dir) if e.event_type == "stage_start" and e.stage == "generate"]
    assert len(starts) == 1  # generate had completed: it was not run again


def test_restarted_supervisor_kills_stale_agent_group(start_supervisor: Start, home: Path) -> None:
    """An agent that survived (its PDEATHSIG lost, e.g. re-parented under a subreaper) is killed on restart."""
    env = agent_env(scripted("--events", "100000", "--delay", "0.05"))
    sup = start_supervisor(env=env, config="ROUNDS: 1\n").wait_ready()
    run_id = sup.call("start")["run_id"]
    run_dir = home / "runs" / run_id
    wait_until(lambda: json.loads((run_dir / "state.json").read_text()).get("agents"), 20, what="agent recorded")
    recorded = next(iter(json.loads((run_dir / "state.json").read_text())["agents"].values()))["pgid"]
    # A stand-in survivor: a process group carrying the run id, recorded in state.json in place of the
    # real agent (which PDEATHSIG does kill), plus an unrelated group whose pid is recorded too.
    survivor = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"],
                                env={**os.environ, "AUTOTRAIN_RUN_ID": run_id}, start_new_session=True)
    state = json.loads((run_dir / "state.json").read_text())
    sup.kill9()
    wait_until(lambda: not pid_alive(recorded), 10, what="original agent dead")
    state["agents"] = {"train": {"stage": "train", "pid": survivor.pid, "pgid": survivor.pid, "phase": "running", "restarts": 0}}
    (run_dir / "state.json").write_text(json.dumps(state))
    unrelated = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"], start_new_session=True)
    state["agents"]["eval"] = {"stage": "eval", "pid": unrelated.pid, "pgid": unrelated.pid, "phase": "running", "restarts": 0}
    (run_dir / "state.json").write_text(json.dumps(state))
    try:
        start_supervisor(env=env).wait_ready()
        assert survivor.wait(10) == -signal.SIGKILL
        assert unrelated.poll() is None  # a reused pid of another program is left alone
    finally:
        for proc in (survivor, unrelated):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
