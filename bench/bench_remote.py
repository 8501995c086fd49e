"""Remote viewer benchmark: emit → viewer latency over CURVE (loopback TCP) against ipc, in the same run.

One supervisor listens with ``--listen 127.0.0.1:PORT``; one agent-side publisher emits events at a
steady rate (default 1,000/s) over ipc; two viewers, each in its own process, receive the same events at
the same time: one on the local ipc egress, one over CURVE with an issued client connection file. Each
event carries its send time; each viewer verifies and decodes every message (as a real viewer does) and
records receive time minus send time.

Run: python bench/bench_remote.py [--rate 1000] [--seconds 10]. Prints figures; no pass/fail.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from multiprocessing.synchronize import Event as SyncEvent
from pathlib import Path
from typing import Any

import zmq
from baseline import shut_down_after

from heidi_engine.bus.codec import decode
from heidi_engine.bus.connection import BusInfo, ConnectionFileError, read_bus_info, read_client_file
from heidi_engine.bus.control import ControlClient
from heidi_engine.bus.errors import BusError
from heidi_engine.bus.event import Event
from heidi_engine.bus.publisher import Publisher
from heidi_engine.bus.remote import connect

ROOT = Path(__file__).resolve().parents[1]
AGENT = f"{sys.executable} {ROOT / 'tests' / 'agents' / 'scripted_agent.py'} --events 1000000 --delay 1"
SUPERVISOR = [sys.executable, "-m", "heidi_engine.supervisor.cli"]


def _free_port_base() -> int:
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = int(probe.getsockname()[1])
        try:
            for offset in (1, 2):
                with socket.socket() as other:
                    other.bind(("127.0.0.1", base + offset))
        except OSError:
            continue
        if base <= 65000:
            return base
    raise SystemExit("no three consecutive free ports on 127.0.0.1")


def _viewer(kind: str, info: BusInfo, expected: int, ready: SyncEvent, out: Any) -> None:
    """Receive events until ``expected`` timed ones arrived (or 5 s of silence); send the latencies, by
    event (its send-time text)."""
    sock = zmq.Context.instance().socket(zmq.SUB)
    sock.setsockopt(zmq.SUBSCRIBE, b"event")
    sock.setsockopt(zmq.SUBSCRIBE, b"state")
    connect(sock, info, info.egress)
    samples: dict[str, float] = {}
    quiet_until = time.monotonic() + 60  # heartbeats keep coming: stop on 5 s without a timed event
    while len(samples) < expected and time.monotonic() < quiet_until and sock.poll(1000):
        frames = sock.recv_multipart()
        now = time.time()
        ready.set()  # a heartbeat or an event: the subscription is in place
        message = decode(frames, info.egress_key)
        if message.header.kind != "event":
            continue
        for event in message.body:  # wire v2: an event message carries a batch
            if event.message.startswith("t="):
                samples[event.message] = (now - float(event.message[2:])) * 1000
                quiet_until = time.monotonic() + 5
    sock.close(linger=0)
    out.put((kind, samples))


def _emit(home: str, run_id: str, rate: float, seconds: float) -> None:
    with Publisher(read_bus_info(home), "generate:2") as pub:
        start = time.perf_counter()
        for i in range(int(rate * seconds)):
            ahead = start + i / rate - time.perf_counter()
            if ahead > 0:
                time.sleep(ahead)
            pub.send("event", Event(run_id=run_id, round=1, stage="generate", event_type="progress",
                                    message=f"t={time.time():.6f}", counters_delta={"teacher_generated": 1}))  # fmt: skip


def _figures(samples: list[float]) -> str:
    if not samples:
        return "no events received"
    samples = sorted(samples)
    p99 = samples[max(int(len(samples) * 0.99) - 1, 0)]
    return f"p50 {statistics.median(samples):.2f} ms, p99 {p99:.2f} ms ({len(samples)} events)"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    expected = int(args.rate * args.seconds)
    with tempfile.TemporaryDirectory(prefix="atb-", dir="/tmp") as folder:
        home = Path(folder)
        (home / "config.yaml").write_text("ROUNDS: 1\nAGENT_HEARTBEAT_TIMEOUT_S: 3600\n")
        env = {**os.environ, **{f"AUTOTRAIN_AGENT_{s}": AGENT for s in ("GENERATE", "VALIDATE", "TRAIN", "EVAL")}}
        env.pop("AUTOTRAIN_BUS", None)
        listen = f"127.0.0.1:{_free_port_base()}"
        sup = subprocess.Popen([*SUPERVISOR, "--home", folder, "--no-gpu", "--listen", listen],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        with shut_down_after(sup, home):
            deadline = time.monotonic() + 60
            while True:
                try:
                    local = read_bus_info(home)
                    with ControlClient(local, timeout_s=1) as client:
                        client.call("ping")
                    break
                except (BusError, ConnectionFileError):  # not up yet
                    if time.monotonic() > deadline or sup.poll() is not None:
                        raise SystemExit("the supervisor did not come up") from None
                    time.sleep(0.1)
            client_file = home / "bench.bus.json"
            subprocess.run([*SUPERVISOR, "--home", folder, "--issue-client", "bench", "--output", str(client_file)],
                           check=True, capture_output=True)  # fmt: skip
            remote = read_client_file(client_file)
            with ControlClient(local, timeout_s=30) as client:
                run_id = client.call("start")["run_id"]
                spawn = mp.get_context("spawn")
                out = spawn.Queue()
                viewers = []
                for kind, info in (("ipc", local), ("CURVE", remote)):
                    ready = spawn.Event()
                    proc = spawn.Process(target=_viewer, args=(kind, info, expected, ready, out))
                    proc.start()
                    viewers.append((proc, ready))
                for _, ready in viewers:
                    if not ready.wait(30):
                        raise SystemExit("a viewer heard nothing within 30 s")
                emitter = spawn.Process(target=_emit, args=(folder, run_id, args.rate, args.seconds))
                emitter.start()
                results = dict(out.get(timeout=args.seconds + 60) for _ in viewers)
                emitter.join()
                for proc, _ in viewers:
                    proc.join()
    ipc, curve = results["ipc"], results["CURVE"]
    print(f"machine: {os.cpu_count()} cores; {args.rate:,.0f} events/s for {args.seconds:g} s, both viewers at once")
    print(f"emit→viewer over ipc:                   {_figures(list(ipc.values()))}")
    print(f"emit→viewer over CURVE (loopback TCP):  {_figures(list(curve.values()))}  (target p99 <= 2 ms)")
    both = ipc.keys() & curve.keys()
    # The same event's two latencies share the emitter's and the supervisor's delays; their difference
    # is what CURVE over TCP adds to it, whatever the load of the machine.
    print(f"CURVE minus ipc, same event:            {_figures([curve[k] - ipc[k] for k in both])}")
    if ipc and curve:
        ratio = statistics.median(curve.values()) / statistics.median(ipc.values())
        print(f"CURVE / ipc, p50: {ratio:.2f}x")


if __name__ == "__main__":
    main()
