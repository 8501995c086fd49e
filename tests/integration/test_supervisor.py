"""The supervisor daemon end to end with scripted agents: runs, control commands, lifecycle guarantees."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from harness import SupervisorProc, agent_env, pid_alive, scripted, wait_until

from heidi_engine.bus.errors import CommandRefused
from heidi_engine.bus.event import COUNTER_NAMES
from heidi_engine.bus.journal import iter_lines, read_events

Start = Callable[..., SupervisorProc]


def event_sums(run_dir: Path) -> dict[str, int]:
    sums = dict.fromkeys(COUNTER_NAMES, 0)
    for event in read_events(run_dir):
        for name, delta in event.counters_delta.items():
            sums[name] += delta
    return sums


def saved_state(run_dir: Path) -> dict:  # type: ignore[type-arg]
    return json.loads((run_dir / "state.json").read_text())


def assert_invariants(run_dir: Path) -> None:
    """Every line a valid v1.0 event; state.json counters equal the sums of counters_delta."""
    lines = [line for path in sorted(run_dir.glob("events.jsonl*")) for line in iter_lines(path)]
    assert len(lines) == len(list(read_events(run_dir)))
    assert saved_state(run_dir)["counters"] == event_sums(run_dir)
    for path in run_dir.rglob("*"):
        expected = 0o700 if path.is_dir() else 0o600
        assert stat.S_IMODE(path.stat().st_mode) == expected, path


def test_full_run_completes_and_leaves_nothing_behind(start_supervisor: Start, home: Path) -> None:
    sup = start_supervisor(env=agent_env(scripted("--events", "4")), config="ROUNDS: 2\n").wait_ready()
    run_id = sup.call("start")["run_id"]
    final = sup.wait_status("completed")
    assert final["run_id"] == run_id and final["counters"]["teacher_generated"] == 2 * 4 * 4
    run_dir = home / "runs" / run_id
    events = list(read_events(run_dir))
    kinds = [(e.round, e.stage, e.event_type) for e in events if e.event_type != "progress"]
    assert kinds[0] == (0, "round_start", "pipeline_start")
    assert kinds[-1] == (2, "round_end", "pipeline_complete")
    for round_no in (1, 2):
        for stage in ("generate", "validate", "train", "eval"):
            assert (round_no, stage, "stage_start") in kinds and (round_no, stage, "stage_end") in kinds
        assert (round_no, "round_start", "stage_start") in kinds and (round_no, "round_end", "stage_end") in kinds
    assert json.loads((run_dir / "config.json").read_text())["ROUNDS"] == 2
    assert sup.stop() == 0
    assert_invariants(run_dir)
    assert (home / "pipeline.pid").read_text() == ""  # kept (never unlinked), emptied
    assert not (home / "run" / "bus.json").exists()
    assert not [p for p in (home / "run").iterdir()]  # no socket files left


def test_invalid_config_exits_2_and_creates_nothing(home: Path) -> None:
    (home / "config.yaml").write_text("ROUNDS: 0\nBATCH_SIZE: big\nNOPE: 1\n")
    proc = subprocess.run([sys.executable, "-m", "heidi_engine.supervisor.cli", "--home", str(home)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.startswith("config.yaml") or "config.yaml:" in line]
    assert len(lines) >= 3, proc.stderr
    assert "ROUNDS" in proc.stderr and "BATCH_SIZE" in proc.stderr and "NOPE" in proc.stderr
    assert sorted(p.name for p in home.iterdir()) == ["config.yaml"]


def test_second_supervisor_refused_first_keeps_serving(start_supervisor: Start, home: Path) -> None:
    first = start_supervisor().wait_ready()
    proc = subprocess.run([sys.executable, "-m", "heidi_engine.supervisor.cli", "--home", str(home), "--no-gpu"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert f"pid {first.proc.pid}" in proc.stderr
    assert first.call("ping")["pong"] is True
    assert (home / "pipeline.pid").read_text().strip() == str(first.proc.pid)


def test_start_validates_overrides_before_anything_starts(start_supervisor: Start, home: Path) -> None:
    sup = start_supervisor(env=agent_env(scripted())).wait_ready()
    with pytest.raises(CommandRefused) as err:
        sup.call("start", {"overrides": {"ROUNDS": "500", "LORA_R": "x"}})
    assert "ROUNDS" in str(err.value) and "LORA_R" in str(err.value)
    assert not list((home / "runs").iterdir())
    assert sup.status()["status"] == "idle"


def test_stop_at_boundary_then_resume_run_same_id_no_double_count(start_supervisor: Start, home: Path) -> None:
    sup = start_supervisor(env=agent_env(scripted("--events", "40", "--delay", "0.05")), config="ROUNDS: 1\n").wait_ready()
    run_id = sup.call("start")["run_id"]
    wait_until(lambda: sup.status()["counters"]["teacher_generated"] >= 3, 20, what="progress")
    with pytest.raises(CommandRefused, match="already"):
        sup.call("start")
    sup.call("stop")
    stopped = sup.wait_status("stopped")
    assert stopped["run_id"] == run_id
    generated = stopped["counters"]["teacher_generated"]
    assert 3 <= generated < 40
    run_dir = home / "runs" / run_id
    pids = [int(p.read_text()) for p in run_dir.glob("agent_*.pid")]
    assert pids and not any(pid_alive(pid) for pid in pids)
    assert sup.call("resume_run", {"run_id": run_id})["run_id"] == run_id
    done = sup.wait_status("completed", timeout_s=60)
    assert done["run_id"] == run_id
    assert done["counters"]["teacher_generated"] == 4 * 40
    sup.stop()
    assert_invariants(run_dir)


def test_pause_shows_paused_only_once_parked_and_resume_continues(start_supervisor: Start, home: Path) -> None:
    sup = start_supervisor(env=agent_env(scripted("--events", "30", "--delay", "0.05")), config="ROUNDS: 1\n").wait_ready()
    run_id = sup.call("start")["run_id"]
    wait_until(lambda: sup.status()["counters"]["teacher_generated"] >= 2, 20, what="progress")
    sup.call("pause")
    paused = sup.wait_status("paused", timeout_s=10)
    assert paused["pause_requested"] is True
    frozen = paused["counters"]["teacher_generated"]
    snapshot = sup.call("snapshot")
    assert next(iter(snapshot["state"]["agents"].values()))["phase"] == "parked"
    # Parked means parked: over two seconds of heartbeats no event arrives.
    events_then = snapshot["state"]["event_count"]
    t0 = sup.status()["uptime_s"]
    wait_until(lambda: sup.status()["uptime_s"] >= t0 + 2, 10, 0.1, "two seconds of uptime")
    assert sup.status()["counters"]["teacher_generated"] == frozen
    assert sup.call("snapshot")["state"]["event_count"] == events_then
    with pytest.raises(CommandRefused, match="cannot pause a run that is paused"):
        sup.call("pause")
    sup.call("resume")
    assert sup.wait_status("running", "completed")["pause_requested"] is False
    done = sup.wait_status("completed", timeout_s=60)
    assert done["run_id"] == run_id and done["counters"]["teacher_generated"] == 4 * 30
    events = [e.message for e in read_events(home / "runs" / run_id)]
    assert "paused at a safe boundary" in events and "resumed" in events


def test_sigterm_first_stops_gracefully_second_shuts_down_fast(start_supervisor: Start, home: Path) -> None:
    sup = start_supervisor(
        env=agent_env(scripted("--events", "1000", "--delay", "0.05", "--ignore-sigterm")),
        config="ROUNDS: 1\nSTOP_GRACE_S: 1\n",
    ).wait_ready()
    run_id = sup.call("start")["run_id"]
    run_dir = home / "runs" / run_id
    wait_until(lambda: list(run_dir.glob("agent_*.pid")), 20, what="agent started")
    agent_pid = int(next(run_dir.glob("agent_*.pid")).read_text())
    sup.proc.send_signal(signal.SIGTERM)
    sup.proc.wait(30)  # graceful: the agent stops at its next boundary, then the daemon exits
    assert sup.proc.returncode == 0
    assert not pid_alive(agent_pid)
    assert saved_state(run_dir)["status"] == "stopped"
    assert_invariants(run_dir)


def test_shutdown_command_kills_agent_group_that_ignores_sigterm(start_supervisor: Start, home: Path) -> None:
    sup = start_supervisor(
        env=agent_env(scripted("--events", "100000", "--delay", "0.01", "--ignore-sigterm", "--fork-grandchild")),
        config="ROUNDS: 1\nSTOP_GRACE_S: 1\n",
    ).wait_ready()
    run_id = sup.call("start")["run_id"]
    run_dir = home / "runs" / run_id
    wait_until(lambda: list(run_dir.glob("grandchild_*.pid")) and list(run_dir.glob("agent_*.pid")), 20, what="agent + grandchild")
    grandchild = int(next(run_dir.glob("grandchild_*.pid")).read_text())
    agent = int(next(run_dir.glob("agent_*.pid")).read_text())
    assert pid_alive(grandchild) and pid_alive(agent)
    os.kill(agent, signal.SIGSTOP)  # wedged: it will never reach a boundary
    sup.call("shutdown")
    assert sup.proc.wait(30) == 0
    wait_until(lambda: not pid_alive(grandchild) and not pid_alive(agent), 10, what="group gone")
    assert saved_state(run_dir)["status"] == "stopped"


def test_list_runs_and_resume_refusals(start_supervisor: Start, home: Path) -> None:
    sup = start_supervisor(env=agent_env(scripted("--events", "1")), config="ROUNDS: 1\n").wait_ready()
    run_id = sup.call("start")["run_id"]
    sup.wait_status("completed")
    runs = sup.call("list_runs")
    assert [r["run_id"] for r in runs] == [run_id] and runs[0]["status"] == "completed"
    with pytest.raises(CommandRefused, match="only stopped, interrupted or failed"):
        sup.call("resume_run", {"run_id": run_id})
    with pytest.raises(CommandRefused, match="no stopped"):
        sup.call("resume_run")
    with pytest.raises(CommandRefused, match="not a run id"):
        sup.call("resume_run", {"run_id": "../../x"})


def test_http_enabled_starts_status_server_child(start_supervisor: Start, home: Path) -> None:
    import socket
    import urllib.request

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sup = start_supervisor(config=f'HTTP_ENABLED: "1"\nHTTP_PORT: {port}\n').wait_ready()

    def health() -> dict | None:  # type: ignore[type-arg]
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
                return json.loads(response.read())  # type: ignore[no-any-return]
        except OSError:
            return None

    assert wait_until(health, 30, 0.1, "HTTP server up")["health"] == "ok"
    assert sup.stop() == 0
    wait_until(lambda: health() is None, 10, 0.1, "HTTP server gone with the daemon")


def test_best_adapter_recorded_in_state_after_eval(start_supervisor: Start, home: Path) -> None:
    writer = scripted("--events", "1", "--write-best-adapter")
    sup = start_supervisor(env=agent_env(scripted("--events", "1"), eval=writer), config="ROUNDS: 1\n").wait_ready()
    run_id = sup.call("start")["run_id"]
    sup.wait_status("completed")
    state = sup.call("snapshot")["state"]
    assert state["best_adapter"] == "out_lora_round_1"
    assert saved_state(home / "runs" / run_id)["best_adapter"] == "out_lora_round_1"
