"""What a browser tab on the page costs, while the supervisor takes ~1,000 events/s.

Starts a supervisor on a temporary home with the scripted agent flooding ``--rate`` events/s, and the HTTP
status server (``python -m heidi_engine.ui.http``) as its own process. After ``--warmup`` seconds, three
windows of ``--seconds`` each are measured: no tab at all (no browser running), then one headless
Chromium tab on ``/ui`` showing the Overview, then the same tab on the Events view. Each window gives the
CPU, in % of one core (psutil ``cpu_times`` delta / wall time), of the supervisor process, of the HTTP
server process and of Chromium (the whole tree the driver launched: browser, zygotes, renderers, GPU and
utility processes; chromedriver itself left out), the event rate the supervisor actually accepted over the
window, and the machine's load average beside them, since a busy machine skews every figure. Then the
deltas, tab minus no tab. The targets: the tab adds < 0.5% of a core to the supervisor (the server follows
one UI feed whatever the tabs do), and Chromium takes < 5% of a core. Figures only, no asserts.

Run: ``python bench/bench_browser.py [--rate 1000] [--seconds 10] [--warmup 5]``. Needs Debian's chromium
and chromium-driver (``tests/browser.py`` drives them).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from browser import Session, missing
from harness import HttpProc, SupervisorProc, agent_env, scripted, short_home, wait_until


class Window:
    """CPU seconds of a set of processes (those alive at each end) and the supervisor's accepted events."""

    def __init__(self, sup: SupervisorProc, groups: dict[str, list[psutil.Process]]) -> None:
        self.sup = sup
        self.groups = groups
        self.events0 = sup.status()["accepted_events"]
        self.wall0 = time.monotonic()
        self.cpu0 = {name: self._cpu(procs) for name, procs in groups.items()}

    @staticmethod
    def _cpu(procs: list[psutil.Process]) -> dict[int, float]:
        used = {}
        for proc in procs:
            try:
                times = proc.cpu_times()
            except psutil.NoSuchProcess:
                continue
            used[proc.pid] = times.user + times.system
        return used

    def close(self, groups: dict[str, list[psutil.Process]]) -> tuple[dict[str, float], float]:
        """(% of one core by group, events/s) since the window opened; a process started meanwhile counts
        from zero, one that ended meanwhile is left out. Chromium's processes are also given by kind
        (``chromium:renderer``, ``chromium:gpu-process``, ``chromium:browser``...)."""
        cpu1 = {name: self._cpu(procs) for name, procs in groups.items()}
        wall = time.monotonic() - self.wall0
        rate = (self.sup.status()["accepted_events"] - self.events0) / wall
        shares: dict[str, float] = {}
        for name, after in cpu1.items():
            before = self.cpu0.get(name, {})
            used = {pid: seconds - before.get(pid, 0.0) for pid, seconds in after.items()}
            shares[name] = 100.0 * sum(used.values()) / wall
            if name == "chromium":
                kinds = {proc.pid: _kind(proc) for proc in groups[name]}
                for pid, seconds in used.items():
                    key = f"chromium:{kinds.get(pid, '?')}"
                    shares[key] = shares.get(key, 0.0) + 100.0 * seconds / wall
        return shares, rate


def _kind(proc: psutil.Process) -> str:
    """A Chromium process's ``--type`` (``browser`` for the main one)."""
    try:
        args = proc.cmdline()
    except psutil.NoSuchProcess:
        return "?"
    return next((a.split("=", 1)[1] for a in args if a.startswith("--type=")), "browser")


Groups = dict[str, list[psutil.Process]]


def measure(sup: SupervisorProc, groups: Groups, seconds: float,
            refresh: Callable[[], Groups] | None = None) -> tuple[dict[str, float], float]:
    """(% of one core by group, events/s) over ``seconds``; ``refresh`` gives the groups again at the end
    (the browser may have started or ended a helper process meanwhile)."""
    window = Window(sup, groups)
    time.sleep(seconds)  # a measurement window, not a synchronisation
    return window.close(groups if refresh is None else refresh())


def row(phase: str, rate: float, shares: dict[str, float]) -> None:
    load = " ".join(f"{value:.2f}" for value in os.getloadavg())
    chromium = shares.get("chromium")
    shown = "—" if chromium is None else f"{chromium:.2f}%"
    print(f"{phase:<20} {rate:>9.0f} {shares['supervisor']:>10.2f}% {shares['http']:>11.2f}% {shown:>10}   "
          f"load {load}")  # fmt: skip
    kinds = sorted(((v, k.split(":", 1)[1]) for k, v in shares.items() if k.startswith("chromium:")), reverse=True)
    if kinds:
        print(f"{'':<20} Chromium by process: " + ", ".join(f"{kind} {value:.2f}%" for value, kind in kinds))


VIEW_NAMES = {"overview": "Overview", "events": "Events view"}


def main() -> None:
    parser = argparse.ArgumentParser(description="CPU a browser tab on the page costs under an event flood")
    parser.add_argument("--rate", type=float, default=1000.0, help="events/s the scripted agent publishes, paced")
    parser.add_argument("--seconds", type=float, default=10.0, help="measurement window per phase")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds before each window")
    parser.add_argument("--views", default="overview,events",
                        help="the views the tab shows, one window each (comma-separated: overview, teacher, trainer, "
                        "events, config, eval, runs; config redraws only its header: the page's floor)")
    args = parser.parse_args()
    why = missing()
    if why is not None:
        sys.exit(f"a browser is needed for this benchmark: {why}")
    # Enough flood for the three windows and their warm-ups, with a margin; then slow events.
    flood = int(args.rate * (3 * (args.seconds + args.warmup) + 30))
    agent = scripted("--flood", str(flood), "--flood-rate", str(args.rate), "--events", "100000", "--delay", "0.01")

    with short_home() as home:
        sup = SupervisorProc(home, env=agent_env(agent), config="ROUNDS: 1\nSTOP_GRACE_S: 1\n")
        server: HttpProc | None = None
        session: Session | None = None
        try:
            sup.wait_ready()
            server = HttpProc(home)
            sup.call("start")
            wait_until(lambda: sup.status()["counters"]["teacher_generated"] > 100, 30, 0.05, "events flowing")
            wait_until(lambda: server.get("/api/snapshot").json()["state"]["status"] == "running", 30, 0.05,  # type: ignore[index]
                       "the HTTP server following the run")  # fmt: skip
            procs = {"supervisor": [psutil.Process(sup.proc.pid)], "http": [psutil.Process(server.proc.pid)]}
            print(f"supervisor pid {sup.proc.pid}, HTTP server pid {server.proc.pid}, {psutil.cpu_count()} cpus, "
                  f"flood paced at {args.rate:.0f} events/s, {args.seconds:g} s windows after {args.warmup:g} s")
            print(f"{'phase':<20} {'events/s':>9} {'supervisor':>11} {'http server':>12} {'chromium':>10}   "
                  "(CPU in % of one core; load average 1, 5, 15 min)")  # fmt: skip
            time.sleep(args.warmup)  # a warm-up, not a synchronisation
            shares, rate = measure(sup, procs, args.seconds)
            results = {"no tab": shares}
            row("no tab", rate, shares)

            session = Session()
            browser = session

            def with_browser() -> Groups:
                return {**procs, "chromium": browser.browser_processes()}

            session.driver.get(f"{server.url}/ui")
            wait_until(lambda: browser.attr("#conn", "data-state") == "live", 20, 0.05, "the tab live")
            for name in args.views.split(","):
                session.driver.find_element("id", f"tab-{name}").click()
                if name == "events":
                    wait_until(lambda: browser.driver.execute_script(
                        "return document.querySelectorAll('#event-list tr.event').length") > 0, 20, 0.05, "events shown")
                time.sleep(args.warmup)  # a warm-up, not a synchronisation
                shares, rate = measure(sup, with_browser(), args.seconds, with_browser)
                phase = f"tab, {VIEW_NAMES.get(name, name)}"
                results[phase] = shares
                row(phase, rate, shares)

            base = results["no tab"]
            for phase in [name for name in results if name != "no tab"]:
                got = results[phase]
                print(f"{phase} minus no tab: supervisor {got['supervisor'] - base['supervisor']:+.2f}%, "
                      f"HTTP server {got['http'] - base['http']:+.2f}%, Chromium {got['chromium']:.2f}% of one core")
            print("target: the tab adds < 0.5% of a core to the supervisor; Chromium < 5% of a core")
        finally:
            if session is not None:
                session.close()
            if server is not None:
                server.close()
            # A flooding agent reaches no stage boundary: the second SIGTERM (after 1 s) stops it now.
            sup.stop(timeout_s=2)


if __name__ == "__main__":
    main()
