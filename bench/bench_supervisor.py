"""Supervisor benchmark, one run, figures as ratios to raw pyzmq on the same machine:

1. raw pyzmq PUSH/PULL msgs/s for 300-byte msgpack messages (the baseline);
2. the supervisor's ingest → validate → redact → persist → publish events/s, its ratio to the baseline
   (target >= 25%) and its own CPU time per event (what the speed work shrinks; on a loaded machine the
   rate moves with the neighbours, the CPU time much less): pre-signed batches of 256 events blasted at
   its ingress (what an agent's publisher sends under a flood), of one ordinary event and of a mixed
   corpus (secrets, ANSI, unicode, long messages, usage; see bench/baseline.py), then events sent one by
   one through a real Publisher (which coalesces them); counted at an egress subscriber; after each, the
   log, the state and the ledger must all hold every event ("nothing lost" or "LOST");
3. agent emit → viewer receive latency p50/p99 at 1,000 events/s (target p99 <= 2 ms);
4. late join on a run with the blasts' accepted events: snapshot request → full state applied in a new
   viewer (target <= 100 ms).

``--baseline REF`` runs a supervisor of REF (HEAD: the last commit, without the working tree's changes)
and one of the working tree alternately, ``--pairs`` times each, every one in a fresh home, and prints each
phase's figures side by side with the after/before ratios: the only fair comparison on a shared machine.

Run: python bench/bench_supervisor.py [--events 1000000] [--corpus both] [--baseline HEAD --pairs 2].
Prints figures; no pass/fail (a LOST line is a bug, not a figure).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import msgpack
import psutil
import zmq
from baseline import Baseline, account, extract, mixed_records, shut_down_after, supervise

from heidi_engine.bus.codec import decode, encode
from heidi_engine.bus.connection import read_bus_info
from heidi_engine.bus.control import ControlClient
from heidi_engine.bus.event import Event
from heidi_engine.bus.publisher import MAX_BATCH, Publisher
from heidi_engine.bus.subscriber import Subscriber

BLAST_MESSAGE = b"generated sample 17/50 for task bank/017 in 1.2 s"
MIXED_MARKER = b"bench-mixed "


def _raw_push(endpoint: str, n: int, payload: bytes) -> None:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PUSH)
    sock.setsockopt(zmq.SNDHWM, 100_000)
    sock.connect(endpoint)
    for _ in range(n):
        sock.send(payload)
    sock.close(linger=-1)
    ctx.term()


def raw_baseline(folder: Path, n: int) -> float:
    payload = msgpack.packb({"m": "x" * 290, "i": 1})
    payload = msgpack.packb({"m": "x" * (290 - (len(payload) - 300)), "i": 1})
    assert len(payload) == 300
    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    pull.setsockopt(zmq.RCVHWM, 100_000)
    endpoint = f"ipc://{folder}/raw"
    pull.bind(endpoint)
    proc = mp.get_context("spawn").Process(target=_raw_push, args=(endpoint, n, payload))
    proc.start()
    pull.recv()
    start = time.perf_counter()
    for _ in range(n - 1):
        msgpack.unpackb(pull.recv())
    elapsed = time.perf_counter() - start
    proc.join()
    pull.close()
    ctx.term()
    return (n - 1) / elapsed


def _event(run_id: str) -> Event:
    return Event(run_id=run_id, round=1, stage="generate", event_type="progress",
                 message=BLAST_MESSAGE.decode(), counters_delta={"teacher_generated": 1})


def _blast(home: str, batches: list[list[bytes]], count: int) -> None:
    """Send ``count`` pre-signed batches, cycling through ``batches``."""
    info = read_bus_info(home)
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PUSH)
    sock.setsockopt(zmq.SNDHWM, 1000)
    sock.connect(info.ingress)
    for i in range(count):
        sock.send_multipart(batches[i % len(batches)])
    sock.close(linger=-1)
    ctx.term()


def _publish(home: str, run_id: str, n: int) -> None:
    event = _event(run_id)
    with Publisher(read_bus_info(home), "generate:1") as pub:
        for _ in range(n):
            pub.send("event", event)


@dataclass
class Figure:
    """One throughput phase: events/s at the egress, the supervisor's CPU µs per event, the load then."""

    rate: float
    cpu_us: float
    load: float


def _cpu_s(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return times.user + times.system


def throughput(home: Path, sup: psutil.Process, n: int, marker: bytes,
               sender: tuple[object, tuple[object, ...]]) -> Figure:
    """Run ``sender`` (a target and its arguments) in a process of its own, count its ``n`` events (those
    holding ``marker``) at an egress subscriber, and measure the supervisor's CPU time meanwhile."""
    info = read_bus_info(home)
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.RCVHWM, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"event")
    sub.connect(info.egress)
    time.sleep(0.5)  # let the subscription reach the publisher before the blast
    target, args = sender
    proc = mp.get_context("spawn").Process(target=target, args=args)
    cpu_start = cpu_end = _cpu_s(sup)
    proc.start()
    got = first_count = 0
    first = last = 0.0
    deadline = time.monotonic() + 600
    # Only the blast's events count: the run's own agent keeps emitting, which must neither be counted
    # nor keep this loop waiting for blast events the egress dropped for a lagging subscriber.
    while got < n and time.monotonic() < deadline and (got == 0 or time.perf_counter() - last < 5):
        if not sub.poll(1000):
            continue
        frames = sub.recv_multipart()
        count = frames[2].count(marker)
        if not count:
            continue
        last = time.perf_counter()
        cpu_end = _cpu_s(sup)
        if got == 0:
            first, first_count = last, count  # time runs from the end of the first batch
        got += count
    load = os.getloadavg()[0]
    proc.join()
    sub.close()
    ctx.term()
    if got < n:
        print(f"  (received {got} of {n} events at the egress subscriber: it lagged and the supervisor "
              "dropped the rest for it, as for any slow viewer)")
    rate = (got - first_count) / (last - first) if last > first else float("nan")
    return Figure(rate, (cpu_end - cpu_start) * 1e6 / n, load)


def _paced(home: str, run_id: str, rate: float, seconds: float) -> None:
    info = read_bus_info(home)
    with Publisher(info, "generate:2") as pub:
        start = time.perf_counter()
        for i in range(int(rate * seconds)):
            ahead = start + i / rate - time.perf_counter()
            if ahead > 0:
                time.sleep(ahead)
            pub.send("event", Event(run_id=run_id, round=1, stage="generate", event_type="progress",
                                    message=f"t={time.time():.6f}", counters_delta={"teacher_generated": 1}))


def latency(home: Path, run_id: str, rate: float = 1000, seconds: float = 10) -> tuple[float, float, int]:
    info = read_bus_info(home)
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"event")
    sub.connect(info.egress)
    time.sleep(0.5)
    proc = mp.get_context("spawn").Process(target=_paced, args=(str(home), run_id, rate, seconds))
    proc.start()
    samples: list[float] = []
    heard = time.time()
    while time.time() - heard < 5:  # the run's own agent emits now and then: wait for timed events only
        if not sub.poll(1000):
            continue
        frames = sub.recv_multipart()
        now = time.time()
        for event in decode(frames, info.egress_key).body:
            if event.message.startswith("t="):
                samples.append((now - float(event.message[2:])) * 1000)
                heard = now
        if len(samples) >= int(rate * seconds):
            break
    proc.join()
    sub.close()
    ctx.term()
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.99) - 1], len(samples)


def late_join(home: Path, tries: int = 5) -> list[float]:
    times = []
    for _ in range(tries):
        start = time.perf_counter()
        sub = Subscriber(home)
        while sub.snapshots == 0:
            sub.poll(0.001)
        times.append((time.perf_counter() - start) * 1000)
        sub.close()
    return times


def one_run(home: Path, args: argparse.Namespace, raw: float, baseline: Baseline | None,
            mixed: list[dict[str, object]]) -> dict[str, object]:
    """Every phase against one supervisor; its figures by phase name, each printed as it comes."""
    out: dict[str, object] = {}
    sup = supervise(home, baseline)
    with shut_down_after(sup, home):
        info = read_bus_info(home)
        proc = psutil.Process(sup.pid)
        with ControlClient(info, timeout_s=30) as client:
            run_id = client.call("start")["run_id"]
            sent = {BLAST_MESSAGE: 0, MIXED_MARKER: 0}
            n = args.events - args.events % MAX_BATCH
            blasts = []
            if args.corpus in ("ordinary", "both"):
                frames = encode(info.key, "event", [_event(run_id)] * MAX_BATCH, sender="generate:1", session="bench")
                blasts.append(("ordinary", BLAST_MESSAGE, [frames]))
            if args.corpus in ("mixed", "both"):
                batches = [encode(info.key, "event", [{**r, "run_id": run_id} for r in mixed[i:i + MAX_BATCH]],
                                  sender="generate:1", session="bench") for i in range(0, len(mixed), MAX_BATCH)]
                blasts.append(("mixed", MIXED_MARKER, batches))
            for name, marker, batches in blasts:
                fig = throughput(home, proc, n, marker, (_blast, (str(home), batches, n // MAX_BATCH)))
                sent[marker] += n
                out[f"batches of {MAX_BATCH}, {name}"] = fig
                print(f"  supervisor ingest→persist→publish, batches of {MAX_BATCH}, {name}: {fig.rate:,.0f} events/s "
                      f"= {fig.rate / raw:.1%} of raw (target >= 25%), {fig.cpu_us:.1f} µs CPU/event, "
                      f"load {fig.load:.1f}")
                print("  " + account(home / "runs" / run_id, client, sent))
            fig = throughput(home, proc, args.events // 4, BLAST_MESSAGE, (_publish, (str(home), run_id, args.events // 4)))
            sent[BLAST_MESSAGE] += args.events // 4
            out["one Publisher.send per event"] = fig
            print(f"  supervisor ingest→persist→publish, one Publisher.send per event: {fig.rate:,.0f} events/s "
                  f"= {fig.rate / raw:.1%} of raw, {fig.cpu_us:.1f} µs CPU/event, load {fig.load:.1f}")
            print("  " + account(home / "runs" / run_id, client, sent))
            p50, p99, count = latency(home, run_id, seconds=args.latency_seconds)
            out["latency"] = (p50, p99)
            print(f"  emit→viewer latency at 1,000 events/s ({count} events): p50 {p50:.2f} ms, p99 {p99:.2f} ms "
                  f"(target p99 <= 2 ms), load {os.getloadavg()[0]:.1f}")
            accepted = client.call("status")["accepted_events"]
            joins = late_join(home)
            out["late join"] = (statistics.median(joins), max(joins))
            print(f"  late join with {accepted:,} events in the run: median {statistics.median(joins):.1f} ms, "
                  f"max {max(joins):.1f} ms (target <= 100 ms)")
    return out


def compare(runs: list[tuple[str, dict[str, object]]]) -> None:
    """Each phase's before and after figures of every pair, with the after/before ratios."""
    before = [figures for side, figures in runs if side == "before"]
    after = [figures for side, figures in runs if side == "after"]
    print("\nbefore/after, pair by pair (ratios after/before: CPU µs/event below 1 and events/s above 1 are gains)")
    for phase in before[0]:
        print(f"{phase}:")
        for i, (b, a) in enumerate(zip(before, after, strict=True), 1):
            fb, fa = b[phase], a[phase]
            if isinstance(fb, Figure) and isinstance(fa, Figure):
                print(f"  pair {i}: before {fb.rate:,.0f} events/s {fb.cpu_us:.1f} µs/event (load {fb.load:.1f}) | "
                      f"after {fa.rate:,.0f} events/s {fa.cpu_us:.1f} µs/event (load {fa.load:.1f}) | "
                      f"CPU µs/event ×{fa.cpu_us / fb.cpu_us:.2f}, events/s ×{fa.rate / fb.rate:.2f}")
            else:
                assert isinstance(fb, tuple) and isinstance(fa, tuple)
                print(f"  pair {i}: before {fb[0]:.2f} / {fb[1]:.2f} ms | after {fa[0]:.2f} / {fa[1]:.2f} ms "
                      f"({'p50 / p99' if phase == 'latency' else 'median / max'}; ×{fa[1] / fb[1]:.2f} on the second)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=1_000_000, help="events per blast (the Publisher phase sends a quarter)")
    parser.add_argument("--raw", type=int, default=300_000)
    parser.add_argument("--latency-seconds", type=float, default=10.0, help="latency run at 1,000 events/s")
    parser.add_argument("--corpus", choices=("ordinary", "mixed", "both"), default="both",
                        help="which batch blasts: one ordinary event, the mixed corpus, or both")
    parser.add_argument("--baseline", metavar="REF", help="also run the supervisor of this git ref (HEAD: the last commit)")
    parser.add_argument("--pairs", type=int, default=2, help="before/after pairs with --baseline")
    args = parser.parse_args()
    if args.events < MAX_BATCH:
        parser.error(f"--events must be at least {MAX_BATCH}")
    started = time.monotonic()
    n = args.events - args.events % MAX_BATCH
    mixed = mixed_records(seed=1, count=min(n, 256 * MAX_BATCH), marker=MIXED_MARKER.decode()) \
        if args.corpus != "ordinary" else []
    with tempfile.TemporaryDirectory(prefix="atb-", dir="/tmp") as folder:
        raw = raw_baseline(Path(folder), args.raw)
        print(f"machine: {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}")
        print(f"raw pyzmq PUSH/PULL, 300-byte msgpack: {raw:,.0f} msgs/s")
        if args.baseline is None:
            home = Path(folder) / "home"
            home.mkdir()
            one_run(home, args, raw, None, mixed)
        else:
            base = extract(args.baseline, Path(folder) / "baseline")
            print(f"baseline {args.baseline} = {base.commit[:12]} (heidi_engine.bus from {base.check().parent})")
            runs: list[tuple[str, dict[str, object]]] = []
            for i in range(args.pairs):
                # ABBA: a drift in the machine's load weighs on both sides alike.
                for side in ("before", "after") if i % 2 == 0 else ("after", "before"):
                    print(f"pair {i + 1}, {side} ({'baseline ' + args.baseline if side == 'before' else 'working tree'}):")
                    home = Path(folder) / f"home-{i}-{side}"
                    home.mkdir()
                    runs.append((side, one_run(home, args, raw, base if side == "before" else None, mixed)))
            compare(runs)
    print(f"took {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
