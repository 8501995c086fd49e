"""Resume benchmark: how long ``resume_run`` takes to answer for a run with a long event log.

Builds a stopped run of --events (default 1,000,000) events with the persister itself (rotating at the
default 100 MB, five generations kept), starts a real supervisor on it, and times the ``resume_run``
command from request to reply (target: within 1 s). For scale it also times what reading the whole log
costs (what a resume without the ledger would have to do before answering), in the same run.

Run: python bench/bench_resume.py [--events 1000000]. Prints figures; no pass/fail.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from heidi_engine.bus.connection import ConnectionFileError, read_bus_info
from heidi_engine.bus.control import ControlClient
from heidi_engine.bus.errors import BusError
from heidi_engine.bus.journal import event_files, read_events
from heidi_engine.bus.state import RunState
from heidi_engine.supervisor.persister import Persister

ROOT = Path(__file__).resolve().parents[1]
RUN = "run_20240101_000000_0123abcd"
AGENT = f"{sys.executable} {ROOT / 'tests' / 'agents' / 'scripted_agent.py'} --events 1 --delay 30"


def build_run(run_dir: Path, count: int) -> None:
    persister = Persister(run_dir, max_bytes=100 * 1024 * 1024, retention=5)
    base = {"event_version": "1.0", "ts": "2024-01-01T00:00:00.000Z", "run_id": RUN, "round": 1,
            "stage": "generate", "level": "info", "event_type": "progress", "counters_delta": {"teacher_generated": 1},
            "usage_delta": {"requests_sent": 1, "input_tokens": 120, "output_tokens": 380,
                            "estimated_cost_usd": 0.00021}, "artifact_paths": []}
    batch = 5000
    for start in range(0, count, batch):
        records = [{**base, "message": f"sample {i} written to data/round_1/raw.jsonl"}
                   for i in range(start, min(count, start + batch))]
        persister.append_events(records)
    state = RunState(run_id=RUN, status="stopped", total_rounds=1, config={"ROUNDS": 1})
    persister.close(state)


def wait_for_supervisor(home: Path, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"supervisor exited {proc.returncode}")
        try:
            info = read_bus_info(home)
            if info.pid == proc.pid:
                with ControlClient(info, timeout_s=2) as client:
                    client.call("ping")
                return
        except (ConnectionFileError, BusError):
            pass
        time.sleep(0.05)
    raise SystemExit("supervisor not ready")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="at-res-", dir="/tmp") as folder:
        home = Path(folder)
        run_dir = home / "runs" / RUN
        began = time.monotonic()
        build_run(run_dir, args.events)
        size = sum(p.stat().st_size for p in event_files(run_dir))
        print(f"run of {args.events:,} events: {size / 2**20:.0f} MB in {len(event_files(run_dir))} file(s), "
              f"built in {time.monotonic() - began:.1f} s")
        began = time.monotonic()
        read = sum(1 for _ in read_events(run_dir))
        full = time.monotonic() - began
        print(f"reading the whole log (what a resume without the ledger does first): {full:.2f} s for {read:,} events")
        (home / "config.yaml").write_text("ROUNDS: 1\n")
        env = {"AUTOTRAIN_AGENT_GENERATE": AGENT, "AUTOTRAIN_AGENT_VALIDATE": AGENT,
               "AUTOTRAIN_AGENT_TRAIN": AGENT, "AUTOTRAIN_AGENT_EVAL": AGENT}
        proc = subprocess.Popen([sys.executable, "-m", "heidi_engine.supervisor.cli", "--home", str(home), "--no-gpu"],
                                env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for_supervisor(home, proc)
            with ControlClient(read_bus_info(home), timeout_s=30) as client:
                began = time.monotonic()
                reply = client.call("resume_run", {"run_id": RUN})
                answered = time.monotonic() - began
                status = client.call("status")
            counted = status["counters"]["teacher_generated"]
            print(f"resume_run answered in {answered * 1000:.0f} ms (target <= 1000 ms); "
                  f"{answered / full:.4f} of the full read; run {reply['run_id']} counts {counted:,} samples "
                  f"({'exact' if counted == args.events else 'WRONG'})")
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)


if __name__ == "__main__":
    main()
