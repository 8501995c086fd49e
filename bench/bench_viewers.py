"""What attached viewers cost the supervisor: event throughput alone vs with 5 viewers, 2 menus and HTTP.

A supervisor runs a scripted agent whose generate stage floods ``--flood`` events as fast as it can; the
throughput is read from the supervisor's ``accepted_events`` (status polled every 50 ms) over the middle
90% of the flood. The same run is done twice on one supervisor: alone, then with 5 viewers (LiveView
subprocesses, or real ``autotrain-dash`` processes on pseudo-terminals with ``--dash``), 2 menus polling
``autotrain-menu --status`` in a loop and the HTTP server scraped once a second. Afterwards every viewer's
final counters are compared with the supervisor's snapshot. Figures only, no asserts.

Run: ``python bench/bench_viewers.py [--flood 20000] [--rate R] [--dash] [--menu-interval 1.0]``. Without
``--rate`` the flood saturates the supervisor, so on a small machine the figure mostly measures the CPU the
viewers take from it; with ``--rate`` (e.g. 2000) it shows whether the supervisor still keeps up.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import pty
import select
import signal
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from heidi_engine.bus.connection import ConnectionFileError, read_bus_info
from heidi_engine.bus.control import ControlClient
from heidi_engine.bus.errors import BusError
from heidi_engine.ui.viewer import LiveView

ROOT = Path(__file__).resolve().parents[1]
SCRIPTED = ROOT / "tests" / "agents" / "scripted_agent.py"
MENU = [sys.executable, "-m", "heidi_engine.ui.menu_cli"]


def viewer_main(home: str) -> int:
    """A LiveView viewer subprocess: 'ready' once connected; on 'report SEQ' prints its counters at SEQ."""
    view = LiveView(home, sender="bench-viewer").start()
    try:
        if view.wait_for(lambda v: v.connected, 20) is None:
            print(json.dumps({"error": "never connected"}), flush=True)
            return 1
        print("ready", flush=True)
        target = int(sys.stdin.readline().split()[1])
        latest = view.wait_for(lambda v: v.seq >= target, 30)
        report = {"seq": latest.seq, "counters": latest.state.counters} if latest else {"error": "behind"}
        print(json.dumps(report), flush=True)
        return 0
    finally:
        view.close()


class Attached:
    """The viewers, menus and HTTP server of the loaded run; :meth:`close` ends every one of them."""

    def __init__(self, home: Path, *, dash: bool, menu_interval: float) -> None:
        self.home = home
        self.stop = threading.Event()
        self.procs: list[subprocess.Popen[str]] = []
        self.ptys: list[int] = []
        self.threads: list[threading.Thread] = []
        self.menu_polls = 0
        self.http_polls = 0
        self.dashes: list[subprocess.Popen[str]] = []
        for _ in range(5):
            if dash:
                self._start_dash()
            else:
                self.procs.append(
                    subprocess.Popen(
                        [sys.executable, __file__, "--viewer", str(home)],
                        stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE,
                        text=True,
                    )
                )
        self.viewers = list(self.procs)
        for viewer in self.viewers:
            assert viewer.stdout is not None
            line = viewer.stdout.readline().strip()
            if line != "ready":
                raise SystemExit(f"a viewer did not connect: {line}")
        self.http = subprocess.Popen(
            [sys.executable, "-m", "heidi_engine.ui.http", "--home", str(home), "--port", "0"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.http.stdout is not None
        self.url = self.http.stdout.readline().split("serving ")[1].split()[0]
        self._thread(self._http_loop)
        for _ in range(2):
            self._thread(lambda: self._menu_loop(menu_interval))

    def _start_dash(self) -> None:
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 48, 160, 0, 0))
        env = dict(os.environ, TERM="xterm-256color")
        dash = str(Path(sys.executable).parent / "autotrain-dash")
        proc = subprocess.Popen(
            [dash, "--home", str(self.home)],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=env,
            start_new_session=True,
            text=True,
        )
        os.close(slave)
        self.ptys.append(master)
        self._thread(lambda: self._drain(master))
        self.dashes.append(proc)

    def _drain(self, master: int) -> None:
        while not self.stop.is_set():
            if select.select([master], [], [], 0.2)[0]:
                try:
                    os.read(master, 1 << 16)
                except OSError:
                    return

    def _thread(self, target: Any) -> None:
        thread = threading.Thread(target=target, daemon=True)
        thread.start()
        self.threads.append(thread)

    def _menu_loop(self, interval: float) -> None:
        while not self.stop.is_set():
            done = subprocess.run(
                [*MENU, "--home", str(self.home), "--status", "--json"],
                capture_output=True,
                text=True,
                stdin=subprocess.DEVNULL,
                check=False,
            )
            if done.returncode == 0:
                self.menu_polls += 1
            self.stop.wait(interval)

    def _http_loop(self) -> None:
        while not self.stop.wait(1.0):
            for path in ("/status", "/metrics"):
                with urllib.request.urlopen(self.url + path, timeout=10) as reply:
                    reply.read()
            self.http_polls += 1

    def counters(self, seq: int) -> list[tuple[str, dict[str, int] | None]]:
        """Each viewer's final counters (at ``seq`` or later), the HTTP server's and a fresh menu's."""
        found: list[tuple[str, dict[str, int] | None]] = []
        for i, viewer in enumerate(self.viewers):
            assert viewer.stdin is not None and viewer.stdout is not None
            viewer.stdin.write(f"report {seq}\n")
            viewer.stdin.flush()
            found.append((f"viewer {i + 1}", json.loads(viewer.stdout.readline()).get("counters")))
        with urllib.request.urlopen(self.url + "/status", timeout=10) as reply:
            found.append(("http /status", json.loads(reply.read())["counters"]))
        done = subprocess.run(
            [*MENU, "--home", str(self.home), "--status", "--json"],
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        found.append(
            ("menu --status --json", json.loads(done.stdout)["counters"] if done.returncode == 0 else None)
        )
        return found

    def close(self) -> None:
        self.stop.set()
        for proc in [*self.procs, self.http, *self.dashes]:
            if proc.poll() is None:
                proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        for thread in self.threads:
            thread.join(15)
        for master in self.ptys:
            os.close(master)


def measure(client: ControlClient, flood: int) -> tuple[float, dict[str, Any]]:
    """Start a run, return (events/s over the middle 90% of the flood, the final status)."""
    base = int(client.call("status")["accepted_events"])
    client.call("start")
    samples: list[tuple[float, int]] = []
    while True:
        status = client.call("status")
        samples.append((time.perf_counter(), int(status["accepted_events"]) - base))
        if status["status"] in ("completed", "failed", "stopped"):
            break
        time.sleep(0.02)
    window = [(t, n) for t, n in samples if flood * 0.05 <= n <= flood * 0.95]
    if status["status"] != "completed" or len(window) < 2 or window[-1][0] <= window[0][0]:
        raise SystemExit(
            f"run ended {status['status']} ({status.get('error')}); {len(window)} samples in the "
            "flood window: try a larger --flood"
        )
    (t0, n0), (t1, n1) = window[0], window[-1]
    generated = status["counters"]["teacher_generated"]
    if generated != flood + 3:  # the flood plus one event from each quick stage
        print(
            f"  WARNING: the run counted {generated} of {flood + 3} generated events "
            f"(refused: {status.get('refused_events')}, bad: {status.get('bad_messages')})"
        )
    return (n1 - n0) / (t1 - t0), status


def _compare(counters: dict[str, int] | None, expected: dict[str, int]) -> str:
    if counters is None:
        return "MISSING (no report)"
    differ = [f"{k} {counters.get(k)} vs {v}" for k, v in expected.items() if counters.get(k) != v]
    return "match" if not differ else "DIFFER (viewer vs snapshot): " + ", ".join(differ)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flood", type=int, default=20000, help="events flooded by the generate stage")
    parser.add_argument(
        "--rate", type=float, default=0.0,
        help="offered events/s (default 0: as fast as possible, i.e. the supervisor saturated)",
    )
    parser.add_argument(
        "--dash", action="store_true", help="real autotrain-dash processes instead of LiveViews"
    )
    parser.add_argument(
        "--menu-interval", type=float, default=1.0, help="seconds between a menu's --status polls"
    )
    parser.add_argument("--viewer", metavar="HOME", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.viewer:
        return viewer_main(args.viewer)
    quick = f"{sys.executable} {SCRIPTED} --events 1"
    env = dict(
        os.environ,
        AUTOTRAIN_AGENT_GENERATE=f"{sys.executable} {SCRIPTED} --events 0 --flood {args.flood} --flood-rate {args.rate}",
        AUTOTRAIN_AGENT_VALIDATE=quick,
        AUTOTRAIN_AGENT_TRAIN=quick,
        AUTOTRAIN_AGENT_EVAL=quick,
    )
    with tempfile.TemporaryDirectory(prefix="at-bench-", dir="/tmp") as folder:
        home = Path(folder)
        (home / "config.yaml").write_text("ROUNDS: 1\n")
        sup = subprocess.Popen(
            [sys.executable, "-m", "heidi_engine.supervisor.cli", "--home", str(home), "--no-gpu"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        attached: Attached | None = None
        try:
            info = None
            deadline = time.monotonic() + 20
            while info is None and time.monotonic() < deadline:
                try:
                    info = read_bus_info(home)
                except ConnectionFileError:
                    time.sleep(0.05)
            if info is None:
                raise SystemExit("the supervisor did not start")
            with ControlClient(info, timeout_s=10) as client:
                alone, _ = measure(client, args.flood)
                print(
                    f"alone:          {alone:10,.0f} events/s  ({args.flood} events, {os.cpu_count()} CPUs)"
                )
                attached = Attached(home, dash=args.dash, menu_interval=args.menu_interval)
                loaded, _ = measure(client, args.flood)
                kind = "autotrain-dash" if args.dash else "LiveView"
                print(
                    f"with viewers:   {loaded:10,.0f} events/s  (5 {kind} viewers, 2 menus polling, HTTP scraped)"
                )
                print(f"change:         {100 * (loaded - alone) / alone:+10.1f} %  (target: a saturating flood loses < 20%)")
                print(f"menu polls: {attached.menu_polls}, HTTP scrapes: {attached.http_polls}")
                snapshot = client.call("snapshot")
                expected = snapshot["state"]["counters"]
                for name, counters in attached.counters(int(snapshot["seq"])):
                    print(f"  {name:<22} counters {_compare(counters, expected)}")
                if args.dash:
                    print("  (the autotrain-dash processes draw to ptys; their counters are not read back)")
        except BusError as exc:
            raise SystemExit(f"supervisor unreachable: {exc}") from None
        finally:
            if attached is not None:
                attached.close()
            sup.send_signal(signal.SIGTERM)
            try:
                sup.wait(30)
            except subprocess.TimeoutExpired:
                sup.kill()
                sup.wait(5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
