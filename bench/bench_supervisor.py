"""Supervisor benchmark, one run, figures as ratios to raw pyzmq on the same machine:

1. raw pyzmq PUSH/PULL msgs/s for 300-byte msgpack messages (the baseline);
2. the supervisor's ingest → validate → redact → persist → publish events/s and its ratio to the baseline
   (target >= 25%), twice: pre-signed batches of 256 events blasted at its ingress (what an agent's
   publisher sends under a flood), then events sent one by one through a real Publisher (which
   coalesces them); both counted at an egress subscriber;
3. agent emit → viewer receive latency p50/p99 at 1,000 events/s (target p99 <= 2 ms);
4. late join on a run with --events (default 1,000,000) accepted events: snapshot request → full state
   applied in a new viewer (target <= 100 ms).

Run: python bench/bench_supervisor.py [--events 1000000]. Prints figures; no pass/fail.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import msgpack
import zmq

from heidi_engine.bus.codec import decode, encode
from heidi_engine.bus.connection import read_bus_info
from heidi_engine.bus.control import ControlClient
from heidi_engine.bus.event import Event
from heidi_engine.bus.publisher import MAX_BATCH, Publisher
from heidi_engine.bus.subscriber import Subscriber

ROOT = Path(__file__).resolve().parents[1]
AGENT = f"{sys.executable} {ROOT / 'tests' / 'agents' / 'scripted_agent.py'} --events 1000000 --delay 1"


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


BLAST_MESSAGE = b"generated sample 17/50 for task bank/017 in 1.2 s"


def _event(run_id: str) -> Event:
    return Event(run_id=run_id, round=1, stage="generate", event_type="progress",
                 message=BLAST_MESSAGE.decode(), counters_delta={"teacher_generated": 1})


def _blast(home: str, run_id: str, n: int, publisher: bool) -> None:
    info = read_bus_info(home)
    event = _event(run_id)
    if publisher:
        with Publisher(info, "generate:1") as pub:
            for _ in range(n):
                pub.send("event", event)
        return
    frames = encode(info.key, "event", [event] * MAX_BATCH, sender="generate:1", session="bench")
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PUSH)
    sock.setsockopt(zmq.SNDHWM, 1000)
    sock.connect(info.ingress)
    for _ in range(n // MAX_BATCH):
        sock.send_multipart(frames)
    sock.close(linger=-1)
    ctx.term()


def supervisor_throughput(home: Path, run_id: str, n: int, *, publisher: bool) -> float:
    info = read_bus_info(home)
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.RCVHWM, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"event")
    sub.connect(info.egress)
    time.sleep(0.5)  # let the subscription reach the publisher before the blast
    if not publisher:
        n -= n % MAX_BATCH
    proc = mp.get_context("spawn").Process(target=_blast, args=(str(home), run_id, n, publisher))
    proc.start()
    got = first_count = 0
    first = last = 0.0
    deadline = time.monotonic() + 600
    # Only the blast's events count: the run's own agent keeps emitting one a second, which must neither
    # be counted nor keep this loop waiting for blast events the egress dropped for a lagging subscriber.
    while got < n and time.monotonic() < deadline and (got == 0 or time.perf_counter() - last < 5):
        if not sub.poll(1000):
            continue
        frames = sub.recv_multipart()
        count = frames[2].count(BLAST_MESSAGE)
        if not count:
            continue
        last = time.perf_counter()
        if got == 0:
            first, first_count = last, count  # time runs from the end of the first batch
        got += count
    proc.join()
    sub.close()
    ctx.term()
    if got < n:
        print(f"  (received {got} of {n} events at the egress subscriber: it lagged and the supervisor "
              "dropped the rest for it, as for any slow viewer)")
    return (got - first_count) / (last - first)


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
    while time.time() - heard < 5:  # the run's own agent emits once a second: wait for timed events only
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--raw", type=int, default=300_000)
    parser.add_argument("--latency-seconds", type=float, default=10.0, help="latency run at 1,000 events/s")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="atb-", dir="/tmp") as folder:
        home = Path(folder)
        (home / "config.yaml").write_text("ROUNDS: 1\nAGENT_HEARTBEAT_TIMEOUT_S: 3600\n")
        env = {**os.environ, **{f"AUTOTRAIN_AGENT_{s}": AGENT for s in ("GENERATE", "VALIDATE", "TRAIN", "EVAL")}}
        raw = raw_baseline(home, args.raw)
        print(f"machine: {os.cpu_count()} cores")
        print(f"raw pyzmq PUSH/PULL, 300-byte msgpack: {raw:,.0f} msgs/s")
        sup = subprocess.Popen([sys.executable, "-m", "heidi_engine.supervisor.cli", "--home", folder, "--no-gpu"],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            while not (home / "run" / "bus.json").exists():
                time.sleep(0.05)
            time.sleep(0.3)
            with ControlClient(read_bus_info(home), timeout_s=30) as client:
                run_id = client.call("start")["run_id"]
                rate = supervisor_throughput(home, run_id, args.events, publisher=False)
                print(f"supervisor ingest→persist→publish, batches of {MAX_BATCH}: {rate:,.0f} events/s "
                      f"= {rate / raw:.1%} of raw (target >= 25%)")
                rate = supervisor_throughput(home, run_id, args.events // 4, publisher=True)
                print(f"supervisor ingest→persist→publish, one Publisher.send per event: {rate:,.0f} events/s "
                      f"= {rate / raw:.1%} of raw")
                p50, p99, count = latency(home, run_id, seconds=args.latency_seconds)
                print(f"emit→viewer latency at 1,000 events/s ({count} events): p50 {p50:.2f} ms, p99 {p99:.2f} ms (target p99 <= 2 ms)")
                accepted = client.call("status")["accepted_events"]
                joins = late_join(home)
                print(f"late join with {accepted:,} events in the run: median {statistics.median(joins):.1f} ms, "
                      f"max {max(joins):.1f} ms (target <= 100 ms)")
                client.call("shutdown")
            sup.wait(60)
        finally:
            if sup.poll() is None:
                sup.send_signal(signal.SIGKILL)
                sup.wait()


if __name__ == "__main__":
    main()
