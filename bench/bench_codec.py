"""Codec micro-benchmark: encode+sign+decode+verify messages/s next to raw msgpack on the same machine,
and the same per event for a batch of 256 events (wire version 2: one frame set and one HMAC a batch).

Prints figures (no pass/fail). Run: python bench/bench_codec.py [--n 50000]
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

import msgpack

from heidi_engine.bus.codec import decode, encode, verify
from heidi_engine.bus.event import Event
from heidi_engine.bus.state import TrainerSample

KEY = os.urandom(32)
RUN = "run_20240215_123456_abc12345"


def rate(fn: Callable[[], object], n: int) -> float:
    best = 0.0
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(n):
            fn()
        best = max(best, n / (time.perf_counter() - start))
    return best


def measure(name: str, kind: str, body: Event | TrainerSample, n: int) -> None:
    """Print one message kind's rates."""
    frames = encode(KEY, kind, body, sender="agent", session="s")
    raw_obj = body.model_dump(mode="json")
    raw = msgpack.packb(raw_obj)
    size = sum(len(f) for f in frames)
    r_raw = rate(lambda: msgpack.unpackb(msgpack.packb(raw_obj)), n)
    r_enc = rate(lambda: encode(KEY, kind, body, sender="agent", session="s"), n)
    r_ver = rate(lambda: verify(frames, KEY), n)
    r_dec = rate(lambda: decode(frames, KEY), n)
    r_all = rate(lambda: decode(encode(KEY, kind, body, sender="agent", session="s"), KEY), n)
    print(f"{name}: {size} bytes on the wire ({len(raw)} bytes raw msgpack body)")
    print(f"  raw msgpack pack+unpack       {r_raw:>10,.0f} msg/s")
    print(f"  encode+sign                   {r_enc:>10,.0f} msg/s")
    print(f"  verify (frames, HMAC, header) {r_ver:>10,.0f} msg/s")
    print(f"  decode (verify + validate)    {r_dec:>10,.0f} msg/s")
    print(f"  encode+sign+decode+verify     {r_all:>10,.0f} msg/s  = {r_all / r_raw:.1%} of raw msgpack")


def measure_batch(event: Event, n: int, size: int = 256) -> None:
    """Print events/s through encode+decode for one event a message vs ``size`` events a message."""
    batch = [event] * size
    raw_obj = event.model_dump(mode="json")
    r_raw = rate(lambda: msgpack.unpackb(msgpack.packb(raw_obj)), n)
    r_one = rate(lambda: decode(encode(KEY, "event", event, sender="agent", session="s"), KEY), n)
    r_many = rate(lambda: decode(encode(KEY, "event", batch, sender="agent", session="s"), KEY), max(1, n // size)) * size
    print(f"event batches: encode+sign+decode+verify, events/s (raw msgpack pack+unpack {r_raw:,.0f}/s)")
    print(f"  1 event a message     {r_one:>10,.0f} events/s  = {r_one / r_raw:.1%} of raw msgpack")
    print(f"  {size} events a message {r_many:>10,.0f} events/s  = {r_many / r_raw:.1%} of raw msgpack "
          f"(x{r_many / r_one:.1f})")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=30_000)
    n = parser.parse_args().n
    event = Event(run_id=RUN, round=1, stage="generate", event_type="progress",
                  message="generated sample 17/50 for task bank/017_merge_intervals in 1.2 s",
                  counters_delta={"teacher_generated": 1}, usage_delta={"requests_sent": 1, "input_tokens": 212, "output_tokens": 180})
    sample = TrainerSample(round=1, step=10, total=500, loss=1.234, learning_rate=2e-4, grad_norm=0.8, tokens_per_s=1500.0)
    for name, kind, body in (("event", "event", event), ("trainer sample", "sample", sample)):
        measure(name, kind, body, n)
    measure_batch(event, n)
    print(f"machine: {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
