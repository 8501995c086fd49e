"""The benchmark scripts still run against the current code: each one, at its smallest size, exits 0
and prints its figures. A bench is read by people, not by CI, so without this a change to the wire or an
API can break one silently; no figure is judged here (speed is never asserted in tests), but an event
lost on the way is."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from browser import require_browser

BENCH = Path(__file__).resolve().parents[2] / "bench"

# (script, smallest arguments, a line every successful run prints)
SMOKE = [
    ("bench_remote.py", ["--rate", "200", "--seconds", "1"], "CURVE minus ipc, same event:"),
    ("bench_supervisor.py", ["--events", "3000", "--raw", "20000", "--latency-seconds", "1"], "late join with"),
    ("bench_dashboard_cpu.py", ["--seconds", "1", "--events", "8000"], "bare receivers"),
    ("bench_teacher.py", ["--latency", "0.05", "--levels", "2", "--repeats", "1", "--requests", "4", "--pool", "2"],
     "pool vs 1"),
    ("bench_redaction.py", ["--seconds", "0.05", "--repeats", "1"], "adversarial texts, 4.0 MiB"),
    ("bench_agent_emit.py", ["--events", "2000", "--repeats", "1"], "agent emit, mixed events"),
    ("bench_browser.py", ["--rate", "200", "--seconds", "1", "--warmup", "0.5"], "tab, Events view minus no tab"),
]
NEEDS_BROWSER = {"bench_browser.py"}


@pytest.mark.parametrize(("script", "args", "expected"), SMOKE, ids=[s for s, _, _ in SMOKE])
def test_bench_runs(script: str, args: list[str], expected: str) -> None:
    if script in NEEDS_BROWSER:
        require_browser()
    done = subprocess.run([sys.executable, str(BENCH / script), *args], capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    evidence = f"exit {done.returncode}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
    assert done.returncode == 0, evidence
    assert expected in done.stdout, evidence
    assert "no events received" not in done.stdout, evidence
    assert "LOST" not in done.stdout, evidence  # the benches that count say what went missing
