"""Floods and late joiners: no accepted event is lost, slow viewers re-snapshot, memory stays bounded."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import psutil
from harness import TESTS, SupervisorProc, agent_env, scripted, wait_until

from heidi_engine.bus.journal import event_files, iter_lines, read_events
from heidi_engine.bus.subscriber import Subscriber

Start = Callable[..., SupervisorProc]
PROBE = TESTS / "agents" / "viewer_probe.py"
FLOOD = 100_000  # 10,000 events/s for 10 s


def start_probe(home: Path, name: str, *extra: str) -> tuple[subprocess.Popen[bytes], Path]:
    out = home / f"{name}.json"
    proc = subprocess.Popen([sys.executable, str(PROBE), str(home), str(out), *extra])
    wait_until(lambda: out.with_suffix(".ready").exists(), 30, 0.05, f"viewer {name} ready")
    return proc, out


def test_flood_with_three_viewers_one_slow(start_supervisor: Start, home: Path) -> None:
    quiet = scripted("--events", "0")
    sup = start_supervisor(
        env=agent_env(quiet, generate=scripted("--events", "0", "--flood", str(FLOOD), "--flood-rate", "10000")),
        config="ROUNDS: 1\nEVENT_LOG_MAX_SIZE_MB: 1\nEVENT_LOG_RETENTION: 100\n",
    ).wait_ready()
    probes = [start_probe(home, "fast1"), start_probe(home, "fast2"), start_probe(home, "slow", "--slow", "0.5", "--per-poll", "1", "--hwm", "1")]
    supervisor = psutil.Process(sup.proc.pid)
    rss: list[float] = []
    done = threading.Event()

    def watch_memory() -> None:
        while not done.wait(0.5):
            rss.append(supervisor.memory_info().rss / 2**20)

    watcher = threading.Thread(target=watch_memory, daemon=True)
    watcher.start()
    run_id = sup.call("start")["run_id"]
    final = sup.wait_status("completed", "failed", timeout_s=180)
    done.set()
    watcher.join()
    assert final["status"] == "completed", final
    (home / "stop_viewers").touch()
    results = {}
    for proc, out in probes:
        assert proc.wait(60) == 0
        results[out.stem] = json.loads(out.read_text())

    run_dir = home / "runs" / run_id
    files = event_files(run_dir)
    assert len(files) >= 10  # rotated at 1 MB
    for path in files:
        raw = path.read_bytes()
        assert raw.endswith(b"\n") and len(list(iter_lines(path))) == raw.count(b"\n")
    floods = [e.message for e in read_events(run_dir) if e.message.startswith("flood ")]
    assert floods == [f"flood {i}" for i in range(FLOOD)]
    total = sum(1 for _ in read_events(run_dir))
    assert total == final["accepted_events"]
    assert final["counters"]["teacher_generated"] == FLOOD

    for name in ("fast1", "fast2"):
        seen = results[name]
        assert seen["gaps"] == 0 and seen["duplicates"] == 0 and seen["ordered"], seen
        assert seen["counters"] == final["counters"] and seen["event_count"] == total
    slow = results["slow"]
    assert slow["gaps"] >= 1 and slow["snapshots"] >= 2, slow
    assert slow["duplicates"] == 0 and slow["ordered"]
    assert slow["counters"] == final["counters"]
    assert max(rss) < 400, f"supervisor RSS peaked at {max(rss):.0f} MiB"
    assert max(rss) - min(rss) < 150, rss


def test_late_joiner_reconstructs_exact_snapshot(start_supervisor: Start, home: Path) -> None:
    sup = start_supervisor(env=agent_env(scripted("--events", "100000", "--delay", "0.002")), config="ROUNDS: 1\n").wait_ready()
    sup.call("start")
    wait_until(lambda: sup.status()["accepted_events"] > 500, 30, what="run well under way")
    live: list[int] = []
    sub = Subscriber(home, on_event=lambda _e, seq: live.append(seq))
    try:
        wait_until(lambda: sub.poll(0.05) >= 0 and sub.snapshots >= 1 and len(live) > 200, 30, 0.0, "joined and following")
        joined_at = sup.status()["accepted_events"]
        sup.call("pause")
        sup.wait_status("paused")
        target = sup.call("snapshot")
        wait_until(lambda: sub.poll(0.05) >= 0 and sub.seq >= target["seq"], 20, 0.0, "caught up")
        # Every egress message (events, samples, status) takes a seq: no gap means nothing was missed.
        assert sub.gaps == 0 and sub.snapshots == 1
        assert all(b > a for a, b in itertools.pairwise(live))  # no duplicate at the seam
        expected = target["state"]
        mine = sub.state.model_dump(mode="json")
        for key in ("run_id", "counters", "usage", "event_count", "recent_events", "current_stage", "current_round",
                    "pause_requested", "status", "trainer"):
            assert mine[key] == expected[key], key
        assert joined_at > 500
    finally:
        sub.close()


def test_viewer_sees_supervisor_restart_and_resnapshots(start_supervisor: Start, home: Path) -> None:
    env = agent_env(scripted("--events", "3"))
    first = start_supervisor(env=env, config="ROUNDS: 1\n").wait_ready()
    sub = Subscriber(home, stale_after_s=1.0)
    try:
        wait_until(lambda: sub.poll(0.05) >= 0 and sub.connected, 20, 0.0, "connected")
        session = sub.supervisor
        first.kill9()
        wait_until(lambda: sub.poll(0.05) >= 0 and not sub.connected, 10, 0.0, "noticed silence")
        second = start_supervisor(env=env).wait_ready()
        run_id = second.call("start")["run_id"]
        second.wait_status("completed")
        wait_until(lambda: sub.poll(0.05) >= 0 and sub.state.status == "completed" and sub.state.run_id == run_id,
                   20, 0.0, "followed the new supervisor")
        assert sub.supervisor != session and sub.connected
    finally:
        sub.close()


def test_agent_exiting_while_supervisor_is_behind_loses_nothing(start_supervisor: Start, home: Path) -> None:
    """An agent that floods faster than the supervisor ingests and exits at once: the stage ends only
    after its final report, so every event is in before the next stage (and before the run ends)."""
    burst = 30_000
    sup = start_supervisor(
        env=agent_env(scripted("--events", "0"), generate=scripted("--events", "0", "--flood", str(burst))),
        config="ROUNDS: 1\n",
    ).wait_ready()
    live: list[int] = []
    sub = Subscriber(home, on_event=lambda _e, seq: live.append(seq))
    try:
        wait_until(lambda: sub.poll(0.05) >= 0 and sub.snapshots >= 1, 20, 0.0, "viewer joined")
        first = sup.call("start")["run_id"]
        sup.wait_status("completed", timeout_s=120)
        final = sup.status()
        assert final["counters"]["teacher_generated"] == burst
        assert final["refused_events"] == {}
        run_dir = home / "runs" / first
        events = list(read_events(run_dir))
        end_of_generate = next(i for i, e in enumerate(events) if e.stage == "generate" and e.event_type == "stage_end")
        assert sum(1 for e in events[:end_of_generate] if e.message.startswith("flood ")) == burst
        # A second run: the viewer must show the new run's counters, not the sum of both.
        second = sup.call("start")["run_id"]
        sup.wait_status("completed", timeout_s=120)
        wait_until(lambda: sub.poll(0.05) >= 0 and sub.state.run_id == second and sub.state.status == "completed",
                   60, 0.0, "viewer followed the second run")
        assert sub.state.counters == sup.status()["counters"]
        assert sub.state.counters["teacher_generated"] == burst
    finally:
        sub.close()
