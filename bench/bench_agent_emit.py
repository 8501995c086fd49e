"""An agent's side of the event path: CPU µs per event of building and sending an event, the way
:meth:`AgentRuntime.emit` does it now (``event_record`` in msgspec, then ``Publisher.send_packed``) and the
old way (``Event.model_validate`` then ``Publisher.send``), in the same run, alternately, so a loaded machine
weighs on both alike. Target: <= 8 µs per ordinary event now.

The time is ``time.process_time`` of this whole process, from the first emit until the publisher's queue
is on the socket (:meth:`Publisher.flush`): the publisher's flusher thread and libzmq's I/O thread count,
as they do in an agent. Events go to a real supervisor's ingress (a run kept in its generate stage), which
confirms them when the publisher closes; a publisher that is not confirmed is said so.

Besides the ordinary event (one progress line and a counter), the mixed corpus of bench/baseline.py
(secrets, ANSI, unicode, long messages, usage with costs, artifact paths) shows what redaction costs here.

Run: python bench/bench_agent_emit.py [--events 200000] [--repeats 3] [--corpus both]. Prints figures.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from baseline import mixed_records, shut_down_after, supervise

from heidi_engine.agents.runtime import AgentRuntime
from heidi_engine.bus.connection import BusInfo, read_bus_info
from heidi_engine.bus.control import ControlClient
from heidi_engine.bus.event import Event, fit_raw_text
from heidi_engine.bus.publisher import Publisher

ORDINARY = ("generated sample 17/50 for task bank/017 in 1.2 s", "info", {"teacher_generated": 1}, {}, [])
TARGET_US = 8.0

# message, level, counters, usage, artifact paths
Item = tuple[str, str, dict[str, int], dict[str, Any], list[str]]


def emit_now(pub: Publisher, run_id: str, items: Sequence[Item]) -> None:
    """The runtime's own :meth:`AgentRuntime.emit`, called on a stand-in that holds only what it reads."""
    agent = SimpleNamespace(run_id=run_id, round=1, stage="generate", _publisher=pub)
    emit = AgentRuntime.emit
    for message, level, counters, usage, artifacts in items:
        emit(agent, "progress", message, level=level, counters=counters, usage=usage, artifacts=artifacts)


def emit_old(pub: Publisher, run_id: str, items: Sequence[Item]) -> None:
    """What :meth:`AgentRuntime.emit` did before the fast path: the pydantic model, sent by ``send``."""
    for message, level, counters, usage, artifacts in items:
        event = Event.model_validate({
            "run_id": run_id, "round": 1, "stage": "generate", "level": level, "event_type": "progress",
            "message": fit_raw_text(message), "counters_delta": dict(counters), "usage_delta": dict(usage),
            "artifact_paths": list(artifacts), "error": None,
        })  # fmt: skip
        pub.send("event", event)


def measure(way: Callable[[Publisher, str, Sequence[Item]], None], info: BusInfo, run_id: str,
            items: Sequence[Item]) -> tuple[float, float, str]:
    """CPU µs per event, events/s (wall) and what the close said, for one way over ``items``."""
    pub = Publisher(info, f"generate:{os.getpid()}")
    gc.collect()
    wall, cpu = time.perf_counter(), time.process_time()
    way(pub, run_id, items)
    pub.flush()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    pub.close()
    note = "" if pub.confirmed else f" (not confirmed: {pub.undelivered} undelivered, confirmed={pub.confirmed})"
    return cpu * 1e6 / len(items), len(items) / wall, note


def corpus_items(name: str, n: int) -> list[Item]:
    if name == "ordinary":
        return [ORDINARY] * n
    records = mixed_records(seed=1, count=min(n, 65_536), marker="bench-mixed ")
    return [(r["message"], r["level"], r["counters_delta"], r["usage_delta"], r["artifact_paths"])
            for r in itertools.islice(itertools.cycle(records), n)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=200_000, help="events per way and repeat")
    parser.add_argument("--repeats", type=int, default=3, help="rounds of now/old, alternately")
    parser.add_argument("--corpus", choices=("ordinary", "mixed", "both"), default="both")
    args = parser.parse_args()
    corpora = ("ordinary", "mixed") if args.corpus == "both" else (args.corpus,)
    with tempfile.TemporaryDirectory(prefix="atb-emit-", dir="/tmp") as folder:
        home = Path(folder)
        sup = supervise(home, None)
        with shut_down_after(sup, home):
            info = read_bus_info(home)
            with ControlClient(info, timeout_s=30) as client:
                run_id = client.call("start")["run_id"]
            print(f"machine: {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}; {args.events:,} events per way "
                  "and repeat, to a real supervisor")
            for name in corpora:
                items = corpus_items(name, args.events)
                with Publisher(info, "generate:1") as warm:  # imports and first-call caches, both ways
                    emit_now(warm, run_id, items[:1000])
                    emit_old(warm, run_id, items[:1000])
                figures: dict[str, list[float]] = {"now": [], "old": []}
                for i in range(args.repeats):
                    for label, way in (("now", emit_now), ("old", emit_old)) if i % 2 == 0 else \
                            (("old", emit_old), ("now", emit_now)):
                        us, rate, note = measure(way, info, run_id, items)
                        figures[label].append(us)
                        print(f"  {name}, {label}: {us:.2f} µs CPU/event, {rate:,.0f} events/s, "
                              f"load {os.getloadavg()[0]:.1f}{note}")
                now, old = statistics.median(figures["now"]), statistics.median(figures["old"])
                target = f" (target <= {TARGET_US:g} µs)" if name == "ordinary" else ""
                print(f"agent emit, {name} events, median of {args.repeats}: now (event_record + send_packed) "
                      f"{now:.2f} µs CPU/event, old (Event.model_validate + send) {old:.2f} µs; "
                      f"now/old ×{now / old:.2f}{target}")


if __name__ == "__main__":
    main()
