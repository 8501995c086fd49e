"""A full disk never takes the daemon down and never loses an event.

The home is a small tmpfs (root only: CI runs as root). A filler file takes the last byte at a chosen
moment, so every write site fails for real: events.jsonl, state.json and the ledger, metrics.jsonl, the
agents' data files, and config.json at a start. The daemon keeps answering, its health names the cause,
agents wait, and once the filler is gone the run completes with exactly the counters it would have had.
With no events flowing the health stays degraded as long as the disk is full, and is ok soon after.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from harness import SupervisorProc, agent_env, pid_alive, scripted, wait_until

from heidi_engine.bus.errors import CommandRefused
from heidi_engine.bus.journal import read_events
from heidi_engine.bus.ledger import load_ledger

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")

Start = Callable[..., SupervisorProc]
EVENTS = 60


@pytest.fixture
def small_home() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="at-full-", dir="/tmp"))
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", str(folder)], check=True)
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)
        folder.rmdir()


def fill(home: Path) -> Path:
    """Take every free byte of the home's file system."""
    filler = home / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for chunk in (65536, 4096, 512, 1):
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * chunk)
    finally:
        os.close(fd)
    return filler


def degraded(sup: SupervisorProc) -> dict[str, object] | None:
    status = sup.status()
    return status if status["health"] == "degraded" and "No space left" in str(status["problem"]) else None


def test_a_full_disk_mid_run_degrades_then_recovers_with_nothing_lost(small_home: Path, start_supervisor: Start) -> None:
    env = agent_env(scripted("--events", str(EVENTS), "--delay", "0.02", "--samples", "--write-data"))
    sup = start_supervisor(home=small_home, env=env, config="ROUNDS: 1\n").wait_ready()
    run_id = sup.call("start")["run_id"]
    wait_until(lambda: sup.status()["counters"]["teacher_generated"] >= 10, 30, 0.05, "the run going", sup.evidence)
    filler = fill(small_home)
    status = wait_until(lambda: (s := degraded(sup)) and "events.jsonl" in str(s["problem"]) and s, 30, 0.1,
                        "events held for the full disk", sup.evidence)
    assert status["status"] == "running"
    # The stage's agent runs on until its own data file cannot grow, and then leaves to wait for room.
    agent = int((small_home / "runs" / run_id / f"agent_{status['current_stage']}_1_0.pid").read_text())
    wait_until(lambda: not pid_alive(agent), 30, 0.1, "the agent leaving on the full disk", sup.evidence)
    assert sup.call("ping")["pong"]  # the daemon answers throughout
    filler.unlink()
    final = sup.wait_status("completed", timeout_s=120)
    assert final["counters"]["teacher_generated"] == EVENTS * 4, sup.evidence()
    assert final["counters"]["train_step"] == 0
    wait_until(lambda: sup.status()["health"] == "ok", 10, 0.1, "health ok again", sup.evidence)
    assert sup.stop() == 0
    assert not (small_home / "run" / "bus.json").exists()
    run_dir = small_home / "runs" / run_id
    assert load_ledger(run_dir).counters == final["counters"]
    # The agent that could not write its data file waited for room instead of failing the run.
    waits = [e.message for e in read_events(run_dir) if "no space left on device; trying again" in e.message]
    assert waits, f"no stage found the disk full: {[e.message for e in read_events(run_dir) if not e.message.startswith('item')]}"


def test_a_start_on_a_full_disk_is_refused_with_the_reason_and_the_next_one_works(
    small_home: Path, start_supervisor: Start
) -> None:
    sup = start_supervisor(home=small_home, env=agent_env(scripted("--events", "2")), config="ROUNDS: 1\n").wait_ready()
    filler = fill(small_home)
    with pytest.raises(CommandRefused, match="No space left on device"):
        sup.call("start")
    status = sup.status()
    assert status["status"] == "idle" and status["health"] == "degraded" and "cannot start" in status["problem"]
    filler.unlink()
    sup.call("start")
    final = sup.wait_status("completed", timeout_s=60)
    assert final["health"] == "ok" and final["problem"] is None
    assert sup.stop() == 0
    assert not (small_home / "run" / "bus.json").exists()


def test_a_full_disk_with_no_events_flowing_is_degraded_all_the_while_and_ok_soon_after(
    small_home: Path, start_supervisor: Start
) -> None:
    """Nothing flows, so the only writes are the state's (and the host samples'): a write skipped because
    nothing changed, or within its second, must not make the health look ok while the disk stays full."""
    env = agent_env(scripted("--events", "3", "--delay", "300"))  # one event, then silence
    sup = start_supervisor(home=small_home, env=env, config="ROUNDS: 1\nSTOP_GRACE_S: 1\n").wait_ready()
    sup.call("start")
    wait_until(lambda: sup.status()["counters"]["teacher_generated"] == 1, 30, 0.05, "the stage's one event", sup.evidence)
    accepted = sup.status()["accepted_events"]
    filler = fill(small_home)
    wait_until(lambda: (s := degraded(sup)) and "state.json" in str(s["problem"]), 10, 0.1,
               "state.json failing on the full disk", sup.evidence)
    polls: list[dict[str, object]] = []
    held = time.monotonic() + 10
    while time.monotonic() < held:  # the disk stays full for 10 s; ask twice a second or more
        polls.append(sup.status())
        time.sleep(0.2)
    healthy = [p for p in polls if p["health"] != "degraded" or "cannot write state.json" not in str(p["problem"])]
    shown = [(p["uptime_s"], p["health"], p["problem"]) for p in healthy[:5]]
    assert not healthy, f"{len(healthy)} of {len(polls)} polls did not say the full disk: {shown}\n{sup.evidence()}"
    assert polls[-1]["accepted_events"] == accepted and polls[-1]["status"] == "running", polls[-1]  # nothing flowed
    filler.unlink()
    wait_until(lambda: sup.status()["health"] == "ok", 2, 0.1, "health ok within 2 s of the space returning", sup.evidence)
    sup.call("shutdown")
    assert sup.stop() == 0, sup.evidence()
