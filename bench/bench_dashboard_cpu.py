"""CPU used by ``autotrain-dash`` in a real terminal (tmux) while the supervisor publishes ~1,000 events/s.

Starts a supervisor on a temporary home with the scripted agent emitting events as fast as ``--delay``
allows, opens the dashboard in a detached tmux pane at its default refresh, and measures the dashboard
process's CPU time over ``--seconds`` (psutil ``cpu_times`` delta / wall time), in % of one core, for the
Overview and the Events view, then once more with the run paused (idle). The event rate actually reached
is measured from the supervisor's accepted-event count over the same window. The target
is < 2% of one core. Then, for the floor under any viewer, three bare receivers of the same egress in
their own processes, measured together over one window: one that only receives each message, one that
also checks its signature, and a :class:`Subscriber` that folds it into a state (what the dashboard's
bus thread does). Figures only, no asserts. Run: ``python bench/bench_dashboard_cpu.py``.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil
import zmq

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from harness import SupervisorProc, agent_env, scripted, short_home, wait_until

from heidi_engine.bus.codec import verify
from heidi_engine.bus.connection import read_bus_info
from heidi_engine.bus.context import new_socket
from heidi_engine.bus.subscriber import Subscriber


class Pane:
    """A detached tmux server running one command in a pane of a fixed size."""

    def __init__(self, command: list[str], width: int = 120, height: int = 40) -> None:
        self.socket = f"dashbench-{uuid.uuid4().hex[:8]}"
        self._tmux(
            "-f",
            "/dev/null",
            "new-session",
            "-d",
            "-x",
            str(width),
            "-y",
            str(height),
            shlex.join(command),
            check=True,
        )
        self.socket_path = self._tmux("display-message", "-p", "#{socket_path}").strip()

    def _tmux(self, *args: str, check: bool = False) -> str:
        # Sizes exported to this process would override the pane's own in the dashboard.
        env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
        done = subprocess.run(
            ["tmux", "-L", self.socket, *args], capture_output=True, text=True, check=check, env=env
        )
        return done.stdout

    def text(self) -> str:
        return self._tmux("capture-pane", "-p")

    def keys(self, *keys: str) -> None:
        self._tmux("send-keys", *keys)

    def process(self) -> psutil.Process:
        """The dashboard's python process (the pane's own process or its child)."""
        pane = psutil.Process(int(self._tmux("list-panes", "-F", "#{pane_pid}").split()[0]))
        for proc in [pane, *pane.children(recursive=True)]:
            if "heidi_engine.ui.dash_cli" in proc.cmdline():
                return proc
        raise RuntimeError("the dashboard process was not found in the tmux pane")

    def kill(self) -> None:
        self._tmux("kill-server")
        if self.socket_path:
            Path(self.socket_path).unlink(missing_ok=True)


def measure(proc: psutil.Process, sup: SupervisorProc, seconds: float) -> tuple[float, float]:
    """(% of one core used by ``proc``, events/s accepted by the supervisor) over ``seconds``."""
    events0 = sup.status()["accepted_events"]
    cpu0, wall0 = proc.cpu_times(), time.monotonic()
    time.sleep(seconds)  # a measurement window, not a synchronisation
    cpu1, wall1 = proc.cpu_times(), time.monotonic()
    events1 = sup.status()["accepted_events"]
    wall = wall1 - wall0
    used = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
    return 100.0 * used / wall, (events1 - events0) / wall


def receive(home: str, how: str) -> None:
    """A bare egress receiver (``--receiver``): drains its socket ten times a second, until killed."""
    info = read_bus_info(Path(home))
    if how == "subscriber":
        sub = Subscriber(home)
        while True:
            sub.poll(0.1)
            time.sleep(0.1)
    sock = new_socket(zmq.SUB, linger_ms=0)
    for topic in (b"event", b"sample", b"state"):
        sock.setsockopt(zmq.SUBSCRIBE, topic)
    sock.connect(info.egress)
    while True:
        sock.poll(100)
        while True:
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            if how == "verify":
                verify(frames, info.egress_key)
        time.sleep(0.1)


def floor(home: Path, sup: SupervisorProc, seconds: float) -> None:
    """CPU of the three bare receivers over one window, in % of one core."""
    hows = ("receive", "verify", "subscriber")
    procs = [subprocess.Popen([sys.executable, __file__, "--receiver", how, str(home)]) for how in hows]
    try:
        time.sleep(2)  # connected and caught up
        watched = [psutil.Process(proc.pid) for proc in procs]
        events0, wall0 = sup.status()["accepted_events"], time.monotonic()
        cpu0 = [sum(p.cpu_times()[:2]) for p in watched]
        time.sleep(seconds)  # a measurement window, not a synchronisation
        cpu1 = [sum(p.cpu_times()[:2]) for p in watched]
        wall = time.monotonic() - wall0
        rate = (sup.status()["accepted_events"] - events0) / wall
        used = {how: 100.0 * (b - a) / wall for how, a, b in zip(hows, cpu0, cpu1, strict=True)}
        print(f"{'bare receivers':<24} {rate:>9.0f}   receive only {used['receive']:.1f}%, with signature check "
              f"{used['verify']:.1f}%, Subscriber {used['subscriber']:.1f}%")
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def main() -> None:
    if sys.argv[1:2] == ["--receiver"]:
        receive(sys.argv[3], sys.argv[2])
        return
    parser = argparse.ArgumentParser(description="dashboard CPU at ~1,000 events/s")
    parser.add_argument("--seconds", type=float, default=10.0, help="measurement window per phase")
    parser.add_argument("--events", type=int, default=40000, help="events the scripted agent emits")
    parser.add_argument("--delay", type=float, default=0.001, help="agent delay between events, s")
    args = parser.parse_args()
    if shutil.which("tmux") is None:
        sys.exit("tmux is needed for this benchmark")

    agent = scripted("--events", str(args.events), "--delay", str(args.delay))
    with short_home() as home:
        sup = SupervisorProc(home, env=agent_env(agent), config="ROUNDS: 1\n")
        pane: Pane | None = None
        try:
            sup.wait_ready()
            sup.call("start")
            wait_until(
                lambda: sup.status()["counters"]["teacher_generated"] > 100, 20, 0.05, "events flowing"
            )
            pane = Pane([sys.executable, "-m", "heidi_engine.ui.dash_cli", "--home", str(home)])
            wait_until(lambda: "● live" in pane.text(), 20, 0.1, "dashboard live")
            proc = pane.process()
            print(f"dashboard pid {proc.pid}, default refresh, 120x40 tmux pane, {psutil.cpu_count()} cpus")
            print(f"{'phase':<24} {'events/s':>9} {'dash CPU':>9}")
            cpu, rate = measure(proc, sup, args.seconds)
            print(f"{'flood, Overview':<24} {rate:>9.0f} {cpu:>8.1f}%")
            pane.keys("4")
            cpu, rate = measure(proc, sup, args.seconds)
            print(f"{'flood, Events view':<24} {rate:>9.0f} {cpu:>8.1f}%")
            floor(home, sup, args.seconds)
            sup.call("pause")
            sup.wait_status("paused", timeout_s=30)
            pane.keys("1")
            cpu, rate = measure(proc, sup, args.seconds)
            print(f"{'paused (idle)':<24} {rate:>9.0f} {cpu:>8.1f}%")
            print("target: < 2% of one core at the default refresh")
        finally:
            if pane is not None:
                pane.kill()
            sup.stop()


if __name__ == "__main__":
    main()
