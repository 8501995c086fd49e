"""How soon ``autotrain-menu --logs --follow`` shows a line an agent just wrote, and what a /metrics scrape costs.

A run folder with an agent log is made in a temporary home; ``--logs --follow --json`` runs as a real
process; lines are appended one at a time and the time until each comes out of the follower is measured
(wall clock, from the write to the read). Then ``exposition`` of the /metrics collector is timed over a
busy state, next to rendering the same state's ``/status`` JSON as the baseline. Figures only, no asserts.

Run: ``python bench/bench_logs_follow.py [--lines 20]``.
"""

from __future__ import annotations

import argparse
import json
import select
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from heidi_engine.bus.state import GpuInfo, HostInfo, RunState
from heidi_engine.ui.http.metrics import exposition
from heidi_engine.ui.status_view import Health, status_fields
from heidi_engine.ui.viewer import View

RUN_ID = "run_20240101_000000_0123abcd"


def follow_latency(lines: int) -> list[float]:
    with tempfile.TemporaryDirectory() as folder:
        home = Path(folder)
        log = home / "runs" / RUN_ID / "logs" / "train_round_1.log"
        log.parent.mkdir(parents=True)
        log.write_text("first\n", encoding="utf-8")
        proc = subprocess.Popen(
            [sys.executable, "-m", "heidi_engine.ui.menu_cli", "--home", str(home), "--logs", "--follow", "--json"],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert proc.stdout is not None
        try:
            proc.stdout.readline()
            latencies = []
            for index in range(lines):
                time.sleep(0.3)  # spacing between writes, so that each is measured alone
                start = time.monotonic()
                with log.open("a", encoding="utf-8") as handle:
                    handle.write(f"line {index}\n")
                ready, _, _ = select.select([proc.stdout], [], [], 10)
                if not ready:
                    raise SystemExit("the follower printed nothing within 10 s")
                json.loads(proc.stdout.readline())
                latencies.append(time.monotonic() - start)
            return latencies
        finally:
            proc.send_signal(signal.SIGINT)
            proc.communicate(timeout=10)


def scrape_cost(rounds: int = 300) -> tuple[float, float]:
    state = RunState(run_id=RUN_ID, status="running", current_round=1, total_rounds=3, current_stage="train",
                     gpus=[GpuInfo(index=i, name="H100", vram_used_mb=1000, vram_total_mb=80000, util_pct=50,
                                   temperature_c=60, power_w=300) for i in range(8)],
                     host=HostInfo(cpu_pct=10, ram_used_mb=1000, ram_total_mb=16000))  # fmt: skip
    state.recent_events = [{"stage": "generate", "round": 1, "event_type": "progress", "ts": "2024-01-01T00:00:00Z"}] * 200
    view = View(state=state, seq=1, connected=True, silence_s=0.1, error=None)
    start = time.perf_counter()
    for _ in range(rounds):
        exposition(lambda: (view, Health("ok")))
    metrics = (time.perf_counter() - start) / rounds
    start = time.perf_counter()
    for _ in range(rounds):
        json.dumps(status_fields(state, Health("ok")))
    status = (time.perf_counter() - start) / rounds
    return metrics, status


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=20)
    args = parser.parse_args()
    latencies = follow_latency(args.lines)
    print(f"--logs --follow: {len(latencies)} lines, write-to-print median {statistics.median(latencies) * 1000:.0f} ms,"
          f" max {max(latencies) * 1000:.0f} ms")
    metrics, status = scrape_cost()
    print(f"/metrics exposition (8 GPUs, 200 events in view): {metrics * 1000:.2f} ms per scrape; "
          f"/status JSON {status * 1000:.3f} ms; ratio {metrics / status:.1f}x")


if __name__ == "__main__":
    main()
