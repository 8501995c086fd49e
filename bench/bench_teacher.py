"""Throughput of the HTTP teacher against the fake OpenAI server with a fixed reply latency.

The server runs in its own process, as a real one would, so the figures measure the client. For each
concurrency level, the same batch of requests goes through ``OpenAITeacher.map`` (httpx, one deadline
per request) and through a bare stdlib keep-alive baseline (``http.client``, no retries, no parsing:
the transport the teacher used before), alternating, ``--repeats`` times. Printed: samples/s, the ratio
to the ideal (concurrency / latency) and the teacher's ratio to the baseline, medians over the repeats.
The target is >= 95% of ideal at concurrency 32. With ``--pool N`` the same batch also goes through
a teacher pool of N such servers (``TEACHER_BASE_URL`` with N URLs), alternating with the others, and
its ratio to the single server is printed: what choosing an endpoint per request costs (about 100%).
Figures only, no asserts.

Run: ``python bench/bench_teacher.py [--latency 0.2] [--levels 1 8 32] [--repeats 3] [--pool 3]``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import socket
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from heidi_engine.agents.teacher.base import Completion, TeacherError
from heidi_engine.agents.teacher.client import OpenAITeacher

SERVER = Path(__file__).resolve().parents[1] / "tests" / "fakes" / "openai_server.py"
PROMPT = [
    {"role": "system", "content": "You write small, correct python functions with tests."},
    {"role": "user", "content": "Write a function that merges two sorted lists."},
]


def teacher_rate(url: str, concurrency: int, requests: int) -> tuple[float, int]:
    """Samples/s through the teacher for ``requests`` calls at ``concurrency``, and how many failed."""
    failures = 0

    def on_done(_job: int, result: Completion | TeacherError) -> None:
        nonlocal failures
        failures += isinstance(result, TeacherError)

    with OpenAITeacher(url, "fake-teacher", None, timeout_s=30.0) as teacher:
        started = time.monotonic()
        teacher.map(range(requests), lambda _job: PROMPT, on_done, concurrency=concurrency)
        elapsed = time.monotonic() - started
    return requests / elapsed, failures


def baseline_rate(port: int, concurrency: int, requests: int) -> float:
    """Samples/s of bare keep-alive ``http.client`` connections, one per worker thread."""
    body = json.dumps({"model": "fake-teacher", "messages": PROMPT, "max_tokens": 512}).encode()
    local = threading.local()

    def one(_job: int) -> None:
        conn = getattr(local, "conn", None)
        if conn is None:
            conn = local.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30.0)
        conn.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
        json.loads(conn.getresponse().read())

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        list(pool.map(one, range(requests)))
    return requests / (time.monotonic() - started)


def start_server(latency: float) -> tuple[subprocess.Popen[str], int]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    proc = subprocess.Popen(
        [sys.executable, str(SERVER), "--port", str(port), "--latency", str(latency)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()  # "serving ..." once it listens
    if not line.startswith("serving"):
        proc.kill()
        raise SystemExit(f"the fake server did not start (exit {proc.wait()})")
    return proc, port


def main() -> None:
    parser = argparse.ArgumentParser(description="HTTP teacher throughput against a fake server")
    parser.add_argument("--latency", type=float, default=0.2, help="server reply latency in seconds")
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 8, 32], help="concurrency levels")
    parser.add_argument("--repeats", type=int, default=3, help="runs per level and client (median shown)")
    parser.add_argument(
        "--requests", type=int, default=0, help="requests per run (default: max(32, 8 x concurrency))"
    )
    parser.add_argument("--pool", type=int, default=0, help="also measure a pool of this many servers")
    args = parser.parse_args()

    proc, port = start_server(args.latency)
    url = f"http://127.0.0.1:{port}/v1"
    pool = [start_server(args.latency) for _ in range(args.pool if args.pool > 1 else 0)]
    pool_url = ",".join(f"http://127.0.0.1:{p}/v1" for _proc, p in pool)
    print(f"fake server latency {args.latency * 1000:.0f} ms, in its own process; medians of {args.repeats}")
    print(
        f"{'concurrency':>11} {'requests':>8} {'teacher/s':>10} {'baseline/s':>10} {'ideal':>8} "
        f"{'teacher':>8} {'baseline':>8} {'vs base':>8} {'failed':>6}"
        + (f" {'pool/s':>10} {'pool vs 1':>9}" if pool else "")
    )
    try:
        for level in args.levels:
            requests = args.requests or max(32, 8 * level)
            teacher_runs, base_runs, pool_runs, failed = [], [], [], 0
            for _ in range(args.repeats):
                rate, failures = teacher_rate(url, level, requests)
                teacher_runs.append(rate)
                failed += failures
                base_runs.append(baseline_rate(port, level, requests))
                if pool:
                    rate, failures = teacher_rate(pool_url, level, requests)
                    pool_runs.append(rate)
                    failed += failures
            rate, base = statistics.median(teacher_runs), statistics.median(base_runs)
            ideal = level / args.latency
            pooled = statistics.median(pool_runs) if pool_runs else 0.0
            print(
                f"{level:>11} {requests:>8} {rate:>10.1f} {base:>10.1f} {ideal:>8.1f} {rate / ideal:>8.0%} "
                f"{base / ideal:>8.0%} {rate / base:>8.0%} {failed:>6}"
                + (f" {pooled:>10.1f} {pooled / rate:>9.0%}" if pool else "")
            )
    finally:
        for server in [proc, *(p for p, _port in pool)]:
            server.terminate()
            server.wait(timeout=10)


if __name__ == "__main__":
    main()
