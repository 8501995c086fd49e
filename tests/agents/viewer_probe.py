"""A viewer process for chaos tests: follows the bus with a Subscriber and reports what it saw as JSON.

Usage: viewer_probe.py HOME OUT.json [--slow SECONDS] [--per-poll N] [--hwm N]; it runs until HOME/stop_viewers exists.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import time
from pathlib import Path

import psutil

from heidi_engine.bus.event import Event
from heidi_engine.bus.subscriber import Subscriber


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("home")
    p.add_argument("out")
    p.add_argument("--slow", type=float, default=0.0)
    p.add_argument("--hwm", type=int, default=100_000)
    p.add_argument("--per-poll", type=int, default=50, help="messages read per poll when --slow")
    args = p.parse_args()
    live_seqs: list[int] = []

    def on_event(_event: Event, seq: int) -> None:
        live_seqs.append(seq)

    sub = Subscriber(args.home, on_event=on_event, rcvhwm=args.hwm)
    stop = Path(args.home) / "stop_viewers"
    (Path(args.out).with_suffix(".ready")).write_text(str(os.getpid()))
    while not stop.exists():
        sub.poll(0.05, max_messages=args.per_poll if args.slow else 10_000)
        if args.slow:
            time.sleep(args.slow)
    # Catch up: a viewer is up to date once its seq has stood still through two supervisor heartbeats
    # (1 s apart; each carries the supervisor's seq, so one that dropped events learns it from them).
    # Stopping at the first quiet poll would miss the drops of a viewer that read its last buffered batch.
    deadline = time.monotonic() + 30
    settled_at, last_seq = time.monotonic(), sub.seq
    while time.monotonic() < deadline:
        sub.poll(0.1)
        if sub.seq != last_seq or sub._need_snapshot:
            settled_at, last_seq = time.monotonic(), sub.seq
        elif time.monotonic() - settled_at > 2.5:
            break
    duplicates = len(live_seqs) - len(set(live_seqs))
    ordered = all(b > a for a, b in itertools.pairwise(live_seqs))
    result = {
        "seq": sub.seq, "snapshots": sub.snapshots, "gaps": sub.gaps, "live_events": len(live_seqs),
        "duplicates": duplicates, "ordered": ordered, "counters": sub.state.counters,
        "event_count": sub.state.event_count, "bad": dict(sub.bad_messages),
        "rss_mb": psutil.Process().memory_info().rss / 2**20,
    }
    sub.close()
    Path(args.out).write_text(json.dumps(result))


if __name__ == "__main__":
    main()
