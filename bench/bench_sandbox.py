"""Throughput of the unit-test sandbox: solutions per second, one at a time and across all cores.

Run: ``python bench/bench_sandbox.py [--count N] [--workers W]``. Each solution is a small passing
task (a function and four asserts), so the figures measure the sandbox's own cost per run: an interpreter
start, the namespaces, the uid slot, the sweep and the clean-up. It prints figures and asserts nothing,
so that figures from different machines can be compared.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from heidi_engine.agents.sandbox import (
    SandboxLimits,
    network_isolation_available,
    network_isolation_message,
    run_many,
    run_solution,
)

SOLUTION = "def add_numbers(a: int, b: int) -> int:\n    return a + b\n"
TESTS = (
    "assert add_numbers(2, 3) == 5\nassert add_numbers(-4, 10) == 6\n"
    "assert add_numbers(0, 0) == 0\nassert add_numbers(-7, -8) == -15\n"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=40, help="solutions per measurement (default 40)")
    parser.add_argument(
        "--workers", type=int, default=os.cpu_count() or 1, help="parallel workers (default: cores)"
    )
    args = parser.parse_args()
    if args.count < 1 or args.workers < 1:
        parser.error("--count and --workers must be at least 1")
    limits = SandboxLimits(timeout_s=30.0)

    started = time.perf_counter()
    isolated = network_isolation_available()  # the one-off probe, kept out of the figures below
    print(f"probe: {time.perf_counter() - started:.3f} s; network isolated: {isolated}")
    if not isolated:
        print(f"  {network_isolation_message()}")

    durations = []
    started = time.perf_counter()
    for _ in range(args.count):
        result = run_solution(SOLUTION, TESTS, limits)
        if not result.passed:
            raise SystemExit(f"a passing solution did not pass: {result.outcome}\n{result.output}")
        durations.append(result.duration_s)
    serial = time.perf_counter() - started
    print(
        f"serial:   {args.count / serial:7.1f} solutions/s  ({serial / args.count * 1000:.1f} ms each; "
        f"interpreter lifetime median {statistics.median(durations) * 1000:.1f} ms)"
    )

    started = time.perf_counter()
    results = run_many([(SOLUTION, TESTS)] * args.count, limits, workers=args.workers)
    parallel = time.perf_counter() - started
    if not all(result.passed for result in results):
        raise SystemExit("a passing solution did not pass in parallel")
    print(
        f"parallel: {args.count / parallel:7.1f} solutions/s  ({args.workers} workers, "
        f"{serial / parallel:.2f}x serial)"
    )


if __name__ == "__main__":
    main()
