"""Limits for one sandboxed test run as a whole, not per process: memory, process count and CPU time.

:func:`run_limit` gives each run the strongest meter this machine allows:

- a cgroup of its own, where this process may create one below its own (cgroup v2 with the memory and
  pids controllers delegated, else cgroup v1's memory, pids and cpuacct hierarchies, as root usually):
  the kernel enforces memory (swap included) and the process count for all the run's processes together,
  and killing the run means killing the cgroup;
- otherwise the run's process tree, found in ``/proc`` by parent id (complete, because the run is in a
  PID namespace whose orphans are reparented to its init): its memory (resident set) and CPU time are
  summed by polling and the run is killed when over; the process count is capped by RLIMIT_NPROC, which
  counts per user namespace (bubblewrap) or per uid of its own (as root).

CPU time is always polled and summed (cgroup accounting, or the tree's), because RLIMIT_CPU is per process.
:func:`usable_cpus` is how many runs may go at once: the CPUs this process may run on, bounded by its
cgroup's CPU quota.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass

from heidi_engine.agents.sandbox.reaper import kill_until_gone

__all__ = ["RunLimit", "run_limit", "usable_cpus"]

_PAGE = os.sysconf("SC_PAGE_SIZE")
_TICK = os.sysconf("SC_CLK_TCK")
_PREFIX = "heidi-sandbox-"


@dataclass
class _Hierarchy:
    """One cgroup folder of the run (v2: the only one; v1: one per controller hierarchy)."""

    path: str
    controller: str


class RunLimit:
    """The meter and kill switch of one run; :meth:`attach` its first process before it forks."""

    kind = "process tree"

    def __init__(self, memory_bytes: int, max_procs: int, cpu_s: float) -> None:
        self.memory_bytes = memory_bytes
        self.max_procs = max_procs
        self.cpu_s = cpu_s
        self._root: int | None = None
        self.over: str | None = None

    def attach(self, pid: int) -> None:
        """Make ``pid`` (not yet forked) the root of the run."""
        self._root = pid

    def check(self) -> str | None:
        """Why the run is over its budget (and so must be killed), or None; remembered in ``over``."""
        if self.over is None:
            self.over = self._check()
        return self.over

    def _check(self) -> str | None:
        pids = self.pids()
        rss = cpu = 0.0
        for pid in pids:
            try:
                with open(f"/proc/{pid}/stat", "rb") as handle:
                    fields = handle.read().rsplit(b")", 1)[1].split()
            except (OSError, IndexError):
                continue
            cpu += (int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])) / _TICK
            rss += int(fields[21]) * _PAGE
        if rss > self.memory_bytes:
            return f"memory limit of the run ({self.memory_bytes >> 20} MB, all its processes) reached"
        if cpu > self.cpu_s:
            return f"CPU time limit of the run ({self.cpu_s:g} s, all its processes) exceeded"
        return None

    def pids(self) -> list[int]:
        """Every live process of the run."""
        if self._root is None:
            return []
        children: dict[int, list[int]] = {}
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                with open(f"/proc/{name}/stat", "rb") as handle:
                    ppid = int(handle.read().rsplit(b")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(name))
        found, todo = [], [self._root]
        while todo:
            pid = todo.pop()
            found.append(pid)
            todo.extend(children.get(pid, ()))
        return found

    def kill(self) -> int:
        """SIGKILL every process of the run until none is left; how many survived three seconds."""
        return kill_until_gone(lambda: [pid for pid in self.pids() if not _dead(pid)])

    def close(self) -> None:
        """Release what the meter holds (nothing for a process tree)."""


class _CgroupLimit(RunLimit):
    """A cgroup per run: the kernel enforces memory and the process count."""

    def __init__(
        self, memory_bytes: int, max_procs: int, cpu_s: float, hierarchies: list[_Hierarchy]
    ) -> None:
        super().__init__(memory_bytes, max_procs, cpu_s)
        self._dirs = hierarchies
        self.kind = "cgroup v2" if hierarchies[0].controller == "" else "cgroup v1"

    def attach(self, pid: int) -> None:
        super().attach(pid)
        for item in self._dirs:
            _write(os.path.join(item.path, "cgroup.procs"), str(pid))

    def _file(self, controller: str, v1: str, v2: str) -> str:
        for item in self._dirs:
            if item.controller in ("", controller):
                return os.path.join(item.path, v2 if item.controller == "" else v1)
        raise LookupError(controller)

    def _check(self) -> str | None:
        if self.kind == "cgroup v2":
            events = _keyed(self._file("memory", "", "memory.events"))
            usage = _keyed(self._file("cpu", "", "cpu.stat")).get("usage_usec", 0) / 1e6
        else:
            events = _keyed(self._file("memory", "memory.oom_control", ""))
            failed = _read(self._file("memory", "memory.failcnt", "")).strip()
            events["oom"] = events.get("oom_kill", 0) or int(failed or 0)
            usage = int(_read(self._file("cpuacct", "cpuacct.usage", "")) or 0) / 1e9
        if events.get("oom_kill", 0) or events.get("oom", 0):
            return f"memory limit of the run ({self.memory_bytes >> 20} MB, all its processes) reached"
        if usage > self.cpu_s:
            return f"CPU time limit of the run ({self.cpu_s:g} s, all its processes) exceeded"
        return None

    def pids(self) -> list[int]:
        found: set[int] = set()
        for item in self._dirs:
            with contextlib.suppress(OSError):
                found.update(int(line) for line in _read(os.path.join(item.path, "cgroup.procs")).split())
        return sorted(found)

    def kill(self) -> int:
        if self.kind == "cgroup v2":
            with contextlib.suppress(OSError):
                _write(os.path.join(self._dirs[0].path, "cgroup.kill"), "1")
        return super().kill()

    def close(self) -> None:
        deadline = time.monotonic() + 3.0
        for item in self._dirs:
            while True:
                try:
                    os.rmdir(item.path)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        break  # a process that will not die: the folder stays, empty once it does
                    time.sleep(0.005)


def run_limit(memory_bytes: int, max_procs: int, cpu_s: float) -> RunLimit:
    """A fresh meter for one run: a cgroup of its own when one can be created here, else the tree."""
    # Where this process's cgroups are does not change while it runs: looked up once.
    for hierarchies in (_v2_parent(), _v1_parents()):
        if not hierarchies:
            continue
        name = _PREFIX + secrets.token_hex(6)
        made: list[_Hierarchy] = []
        try:
            for parent in hierarchies:
                path = os.path.join(parent.path, name)
                os.mkdir(path, 0o755)
                made.append(_Hierarchy(path, parent.controller))
            limit = _CgroupLimit(memory_bytes, max_procs, cpu_s, made)
            _configure(made, memory_bytes, max_procs)
            return limit
        except OSError:
            for item in made:
                with contextlib.suppress(OSError):
                    os.rmdir(item.path)
    return RunLimit(memory_bytes, max_procs, cpu_s)


def _configure(made: list[_Hierarchy], memory_bytes: int, max_procs: int) -> None:
    for item in made:
        settings: list[tuple[str, str, bool]] = {
            "": [("memory.max", str(memory_bytes), True), ("memory.swap.max", "0", False),
                 ("pids.max", str(max_procs), True)],
            "memory": [("memory.limit_in_bytes", str(memory_bytes), True),
                       ("memory.memsw.limit_in_bytes", str(memory_bytes), False)],
            "pids": [("pids.max", str(max_procs), True)],
        }.get(item.controller, [])  # fmt: skip
        for file, value, required in settings:
            try:
                _write(os.path.join(item.path, file), value)
            except OSError:
                if required:
                    raise


def _cgroup_lines() -> Iterator[tuple[str, str]]:
    with contextlib.suppress(OSError):
        for line in _read("/proc/self/cgroup").splitlines():
            _, controllers, path = line.split(":", 2)
            yield controllers, path


def _mounts(fstype: str) -> dict[str, str]:
    """Mount points of ``fstype`` by their super options (v1: the controllers)."""
    found: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in _read("/proc/self/mountinfo").splitlines():
            left, _, right = line.partition(" - ")
            parts = right.split()
            if len(parts) >= 3 and parts[0] == fstype and left.split()[3] == "/":
                found.setdefault(parts[2], left.split()[4])
    return found


@functools.cache
def _v2_parent() -> list[_Hierarchy]:
    mounts = _mounts("cgroup2")
    own = dict(_cgroup_lines()).get("")
    if not mounts or own is None:
        return []
    path = os.path.join(next(iter(mounts.values())), own.lstrip("/"))
    enabled = _read_or_empty(os.path.join(path, "cgroup.subtree_control")).split()
    if not {"memory", "pids"} <= set(enabled) or not os.access(path, os.W_OK):
        return []
    return [_Hierarchy(path, "")]


@functools.cache
def _v1_parents() -> list[_Hierarchy]:
    mounts = _mounts("cgroup")
    own = {controller: path for controllers, path in _cgroup_lines() for controller in controllers.split(",")}
    found = []
    for controller in ("memory", "pids", "cpuacct"):
        mount = next((point for options, point in mounts.items() if controller in options.split(",")), None)
        if mount is None or controller not in own:
            return []
        path = os.path.join(mount, own[controller].lstrip("/"))
        if not os.access(path, os.W_OK):
            return []
        found.append(_Hierarchy(path, controller))
    return found


def usable_cpus() -> int:
    """The CPUs this process may use: its affinity, bounded by its cgroup's CPU quota (v2 or v1)."""
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        count = os.cpu_count() or 1
    lines = dict(_cgroup_lines())
    quota: float | None = None
    mounts2 = _mounts("cgroup2")
    if "" in lines and mounts2:
        text = _read_or_empty(os.path.join(next(iter(mounts2.values())), lines[""].lstrip("/"), "cpu.max"))
        parts = text.split()
        if len(parts) == 2 and parts[0] != "max":
            quota = int(parts[0]) / int(parts[1])
    own_cpu = next((path for controllers, path in lines.items() if "cpu" in controllers.split(",")), None)
    mount = next((point for options, point in _mounts("cgroup").items() if "cpu" in options.split(",")), None)
    if quota is None and own_cpu is not None and mount is not None:
        base = os.path.join(mount, own_cpu.lstrip("/"))
        cfs = _read_or_empty(os.path.join(base, "cpu.cfs_quota_us")).strip()
        period = _read_or_empty(os.path.join(base, "cpu.cfs_period_us")).strip()
        if cfs.lstrip("-").isdigit() and int(cfs) > 0 and period.isdigit() and int(period) > 0:
            quota = int(cfs) / int(period)
    if quota is not None:
        count = min(count, max(1, math.ceil(quota)))
    return max(1, count)


def _keyed(path: str) -> dict[str, int]:
    values = {}
    for line in _read_or_empty(path).splitlines():
        key, _, value = line.partition(" ")
        if value.strip().isdigit():
            values[key] = int(value)
    return values


def _dead(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            return handle.read().rsplit(b")", 1)[1].split()[0] in (b"Z", b"X")
    except (OSError, IndexError):
        return True


def _read(path: str) -> str:
    with open(path, encoding="ascii") as handle:
        return handle.read()


def _read_or_empty(path: str) -> str:
    try:
        return _read(path)
    except OSError:
        return ""


def _write(path: str, text: str) -> None:
    with open(path, "w", encoding="ascii") as handle:
        handle.write(text)
