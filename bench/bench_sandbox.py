"""Throughput of the unit-test sandbox: solutions per second with each backend, in the same run.

Run: ``python bench/bench_sandbox.py [--count N] [--workers W] [--backends bwrap,namespaces]``. Each
solution is a small passing task (a function and four asserts), so the figures measure the sandbox's own
cost per run: an interpreter start, the namespaces (bubblewrap's mounts too), the uid slot, the run's
cgroup or process-tree meter, the sweep and the clean-up. Backends are measured in turns (bwrap,
namespaces, bwrap, ...) so that a noisy neighbour weighs on both; it prints each backend's solutions/s
and bwrap's ratio to the built-in backend, and asserts nothing. The built-in backend needs root.
"""

from __future__ import annotations

import argparse
import statistics
import time

from heidi_engine.agents.sandbox.limits import run_limit
from heidi_engine.agents.sandbox.runner import (
    SandboxLimits,
    run_many,
    run_solution,
    sandbox_backend,
    usable_cpus,
)

SOLUTION = "def add_numbers(a: int, b: int) -> int:\n    return a + b\n"
TESTS = (
    "assert add_numbers(2, 3) == 5\nassert add_numbers(-4, 10) == 6\n"
    "assert add_numbers(0, 0) == 0\nassert add_numbers(-7, -8) == -15\n"
)


def _serial(backend: str, count: int, limits: SandboxLimits) -> float:
    started = time.perf_counter()
    for _ in range(count):
        result = run_solution(SOLUTION, TESTS, limits, sandbox=backend)
        if not result.passed:
            raise SystemExit(f"{backend}: a passing solution did not pass: {result.outcome}\n{result.output}")
    return count / (time.perf_counter() - started)


def _parallel(backend: str, count: int, workers: int, limits: SandboxLimits) -> float:
    started = time.perf_counter()
    results = run_many([(SOLUTION, TESTS)] * count, limits, workers=workers, sandbox=backend)
    if not all(result.passed for result in results):
        raise SystemExit(f"{backend}: a passing solution did not pass in parallel")
    return count / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=40, help="solutions per measurement (default 40)")
    parser.add_argument(
        "--workers", type=int, default=usable_cpus(), help="parallel workers (default: usable CPUs)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="turns per backend; the median is printed")
    parser.add_argument("--backends", default="bwrap,namespaces", help="comma-separated SANDBOX modes")
    args = parser.parse_args()
    if min(args.count, args.workers, args.rounds) < 1:
        parser.error("--count, --workers and --rounds must be at least 1")
    limits = SandboxLimits(timeout_s=30.0)
    backends = [name.strip() for name in args.backends.split(",") if name.strip()]
    probe = run_limit(64 << 20, 8, 1.0)
    print(f"per-run limits: {probe.kind}; {args.workers} worker(s) for the parallel figures")
    probe.close()
    for backend in backends:
        started = time.perf_counter()
        try:
            chosen = sandbox_backend(backend)  # the one-off probe, kept out of the figures
        except RuntimeError as exc:
            raise SystemExit(f"{backend}: {exc}") from None
        print(f"{backend}: probe {time.perf_counter() - started:.3f} s, runs as {chosen}")
    serial: dict[str, list[float]] = {name: [] for name in backends}
    parallel: dict[str, list[float]] = {name: [] for name in backends}
    for _ in range(args.rounds):
        for backend in backends:
            serial[backend].append(_serial(backend, args.count, limits))
            parallel[backend].append(_parallel(backend, args.count, args.workers, limits))
    for backend in backends:
        print(
            f"{backend:>10}: serial {statistics.median(serial[backend]):6.1f} solutions/s, "
            f"parallel {statistics.median(parallel[backend]):6.1f} solutions/s (median of {args.rounds})"
        )
    if "bwrap" in backends and "namespaces" in backends:
        for label, figures in (("serial", serial), ("parallel", parallel)):
            ratio = statistics.median(figures["bwrap"]) / statistics.median(figures["namespaces"])
            print(f"bwrap / namespaces, {label}: {ratio:.2f}")


if __name__ == "__main__":
    main()
