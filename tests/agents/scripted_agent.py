"""A scripted stage agent for supervisor tests: emits N counted events, with crashes and misbehaviour on demand.

It resumes exactly: the number of events already accepted for its stage and round is read back from the
run's ledger (the supervisor's record), so a restart never double-counts.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time

from heidi_engine.agents.dataset.samples import already_counted
from heidi_engine.agents.runtime import AgentRuntime, run_stage
from heidi_engine.bus.journal import read_events
from heidi_engine.bus.ledger import load_ledger
from heidi_engine.bus.state import TrainerSample


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser()
    p.add_argument("--events", type=int, default=3)
    p.add_argument("--delay", type=float, default=0.0)
    p.add_argument("--counter", default="teacher_generated")
    p.add_argument("--crash-once-at", type=int, default=None, help="os._exit(3) before event K on attempt 0")
    p.add_argument("--always-crash", action="store_true")
    p.add_argument("--ignore-sigterm", action="store_true")
    p.add_argument("--fork-grandchild", action="store_true")
    p.add_argument("--samples", action="store_true", help="publish a trainer sample per event")
    p.add_argument("--stages", default="", help="comma list of stages this script misbehaves in (default all)")
    p.add_argument("--write-best-adapter", action="store_true", help="record out_lora_round_N as the best adapter")
    p.add_argument("--flood", type=int, default=0, help="emit this many events first")
    p.add_argument("--flood-rate", type=float, default=0.0, help="events/s for --flood (0: as fast as possible)")
    p.add_argument("--write-data", action="store_true", help="append a line per item to data/round_N/<stage>.jsonl")
    return p.parse_args()


def main(rt: AgentRuntime) -> None:
    args = _parse()
    misbehave = not args.stages or rt.stage in args.stages.split(",")
    if misbehave and args.always_crash:
        os._exit(3)
    if misbehave and args.ignore_sigterm:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if misbehave and args.fork_grandchild:
        child = subprocess.Popen([sys.executable, "-c", "import signal,time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(3600)"])
        (rt.run_dir / f"grandchild_{rt.stage}.pid").write_text(str(child.pid))
    start = time.monotonic()
    for i in range(args.flood):
        if args.flood_rate and i % 100 == 0:
            ahead = start + i / args.flood_rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
        rt.progress(f"flood {i}", counters={args.counter: 1})
    if args.flood:
        # Floods are sent again by every attempt: count only this script's items, from the log.
        done = sum(
            e.counters_delta.get(args.counter, 0)
            for e in read_events(rt.run_dir)
            if e.stage == rt.stage and e.round == rt.round and e.message.startswith("item ")
        )
    else:
        # What the supervisor recorded, however many log generations rotation has deleted.
        done = already_counted(rt.run_dir, rt.stage, rt.round).counters.get(args.counter, 0)
    (rt.run_dir / f"agent_{rt.stage}_{rt.round}_{rt.attempt}.pid").write_text(str(os.getpid()))
    with open(rt.run_dir / "starts.jsonl", "a") as handle:  # every start, and what it found counted
        rerun = (rt.round, rt.stage) in load_ledger(rt.run_dir).done()  # started for a stage already complete
        handle.write(json.dumps({"stage": rt.stage, "round": rt.round, "attempt": rt.attempt, "done": done,
                                 "rerun": rerun}) + "\n")
    for i in range(done, args.events):
        rt.checkpoint()
        if misbehave and args.crash_once_at is not None and rt.attempt == 0 and i == args.crash_once_at:
            os._exit(3)
        if args.write_data:
            data = rt.run_dir / "data" / f"round_{rt.round}"
            data.mkdir(parents=True, exist_ok=True)
            with open(data / f"{rt.stage}.jsonl", "a") as handle:
                handle.write(json.dumps({"item": i, "pad": "x" * 200}) + "\n")
        rt.progress(f"item {i}", counters={args.counter: 1})
        if args.samples:
            rt.sample(TrainerSample(round=rt.round, step=i + 1, total=args.events, loss=1.0 / (i + 1)))
        if args.delay:
            time.sleep(args.delay)
    if args.write_best_adapter:
        record = {"round": rt.round, "adapter_dir": f"out_lora_round_{rt.round}", "val_loss": 1.0}
        (rt.run_dir / "best_adapter.json").write_text(json.dumps(record))
    rt.checkpoint()


if __name__ == "__main__":
    sys.exit(run_stage(main))
