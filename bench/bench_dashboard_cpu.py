"""CPU used by ``autotrain-dash`` in a real terminal (tmux) while the supervisor publishes ~1,000 events/s.

Starts a supervisor on a temporary home with the scripted agent emitting events as fast as ``--delay``
allows (or paced at ``--rate`` events/s), opens the dashboard in a detached tmux pane at its default
refresh, and measures the dashboard process's CPU time over ``--seconds`` (psutil ``cpu_times`` delta /
wall time), in % of one core, for the Overview and the Events view, then once more with the run paused
(idle); ``--phases idle`` measures the paused dashboard alone. The event rate actually reached is measured
from the supervisor's accepted-event count over the same window, and each line gives the machine's load
average beside its figure, since a busy machine skews it. The targets: < 2% of one core under a flood,
< 0.5% idle. Then, for the floor under any viewer, three bare receivers of the same egress in their own
processes, measured together over one window: one that only receives each message, one that also checks
its signature, and a :class:`Subscriber` that folds it into a state (what the dashboard's bus thread
does). Figures only, no asserts. Run: ``python bench/bench_dashboard_cpu.py``.
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


PHASES = ("overview", "events", "floor", "idle")


def agent_command(args: argparse.Namespace, phases: list[str]) -> str:
    """The scripted agent: ``--rate`` events/s paced for the flood phases (then slow events, so that a pause
    lands at once), else ``--events`` with ``--delay`` between them; slow events alone for ``idle`` alone."""
    if phases == ["idle"]:
        return scripted("--events", str(args.events), "--delay", "0.01")
    if args.rate:
        flood = int(args.rate * (args.seconds * (len(phases) - ("idle" in phases)) + 20))
        return scripted("--flood", str(flood), "--flood-rate", str(args.rate), "--events", str(args.events),
                        "--delay", "0.01")  # fmt: skip
    return scripted("--events", str(args.events), "--delay", str(args.delay))


def row(phase: str, rate: float, cpu: float) -> None:
    load = " ".join(f"{value:.2f}" for value in os.getloadavg())
    print(f"{phase:<24} {rate:>9.0f} {cpu:>8.2f}%   load {load}")


def main() -> None:
    if sys.argv[1:2] == ["--receiver"]:
        receive(sys.argv[3], sys.argv[2])
        return
    parser = argparse.ArgumentParser(description="dashboard CPU under an event flood and idle")
    parser.add_argument("--seconds", type=float, default=10.0, help="measurement window per phase")
    parser.add_argument("--events", type=int, default=40000, help="events the scripted agent emits")
    parser.add_argument("--delay", type=float, default=0.001, help="agent delay between events, s")
    parser.add_argument("--rate", type=float, default=0.0, help="events/s to publish, paced (instead of --delay)")
    parser.add_argument("--phases", default=",".join(PHASES), help=f"which to measure, of {','.join(PHASES)}")
    args = parser.parse_args()
    phases = [phase for phase in args.phases.split(",") if phase]
    if not phases or set(phases) - set(PHASES):
        sys.exit(f"--phases: choose from {','.join(PHASES)}")
    if shutil.which("tmux") is None:
        sys.exit("tmux is needed for this benchmark")

    with short_home() as home:
        sup = SupervisorProc(home, env=agent_env(agent_command(args, phases)), config="ROUNDS: 1\n")
        pane: Pane | None = None
        try:
            sup.wait_ready()
            sup.call("start")
            wait_until(
                lambda: sup.status()["counters"]["teacher_generated"] > 100, 20, 0.05, "events flowing"
            )
            if phases == ["idle"]:
                sup.call("pause")
                sup.wait_status("paused", timeout_s=30)
            pane = Pane([sys.executable, "-m", "heidi_engine.ui.dash_cli", "--home", str(home)])
            wait_until(lambda: "● live" in pane.text(), 20, 0.1, "dashboard live")
            proc = pane.process()
            print(f"dashboard pid {proc.pid}, default refresh, 120x40 tmux pane, {psutil.cpu_count()} cpus")
            print(f"{'phase':<24} {'events/s':>9} {'dash CPU':>9}   (load average 1, 5, 15 min)")
            if "overview" in phases:
                cpu, rate = measure(proc, sup, args.seconds)
                row("flood, Overview", rate, cpu)
            if "events" in phases:
                pane.keys("4")
                cpu, rate = measure(proc, sup, args.seconds)
                row("flood, Events view", rate, cpu)
            if "floor" in phases:
                floor(home, sup, args.seconds)
            if "idle" in phases:
                if phases != ["idle"]:
                    sup.call("pause")
                sup.wait_status("paused", timeout_s=60 if args.rate else 30)
                pane.keys("1")
                time.sleep(2)  # the last events drawn and rated: idle from here
                cpu, rate = measure(proc, sup, args.seconds)
                row("paused (idle)", rate, cpu)
            print("target: < 2% of one core at the default refresh under a flood, < 0.5% idle")
        finally:
            if pane is not None:
                pane.kill()
            sup.stop()


if __name__ == "__main__":
    main()
