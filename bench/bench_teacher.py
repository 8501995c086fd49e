"""Throughput of the HTTP teacher against the fake OpenAI server with a fixed reply latency.

For each concurrency level, runs a batch of requests through ``OpenAITeacher.map`` and prints samples/s
next to the ideal (concurrency / latency) and their ratio; the target is >= 80% of ideal at 32.
Figures only, no asserts. Run: ``python bench/bench_teacher.py [--latency 0.2] [--levels 1 8 32]``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from fakes.openai_server import FakeOpenAIServer

from heidi_engine.agents.teacher import Completion, OpenAITeacher, TeacherError

PROMPT = [
    {"role": "system", "content": "You write small, correct python functions with tests."},
    {"role": "user", "content": "Write a function that merges two sorted lists."},
]


def run_level(url: str, concurrency: int, requests: int) -> tuple[float, int]:
    """Samples/s for ``requests`` calls at ``concurrency``, and how many of them failed."""
    failures = 0

    def on_done(_job: int, result: Completion | TeacherError) -> None:
        nonlocal failures
        failures += isinstance(result, TeacherError)

    with OpenAITeacher(url, "fake-teacher", None, timeout_s=30.0) as teacher:
        started = time.monotonic()
        teacher.map(range(requests), lambda _job: PROMPT, on_done, concurrency=concurrency)
        elapsed = time.monotonic() - started
    return requests / elapsed, failures


def main() -> None:
    parser = argparse.ArgumentParser(description="HTTP teacher throughput against a fake server")
    parser.add_argument("--latency", type=float, default=0.2, help="server reply latency in seconds")
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 8, 32], help="concurrency levels")
    parser.add_argument(
        "--requests", type=int, default=0, help="requests per level (default: max(32, 4 x concurrency))"
    )
    args = parser.parse_args()

    print(f"fake server latency {args.latency * 1000:.0f} ms")
    print(f"{'concurrency':>11} {'requests':>8} {'samples/s':>10} {'ideal':>8} {'ratio':>6} {'failed':>6}")
    with FakeOpenAIServer(latency_s=args.latency) as server:
        for level in args.levels:
            requests = args.requests or max(32, 4 * level)
            rate, failed = run_level(server.url, level, requests)
            ideal = level / args.latency
            print(f"{level:>11} {requests:>8} {rate:>10.1f} {ideal:>8.1f} {rate / ideal:>6.0%} {failed:>6}")


if __name__ == "__main__":
    main()
