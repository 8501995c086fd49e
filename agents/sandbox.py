"""The sandbox that runs generated code against its unit tests (the unit-test gate, DESIGN §11).

Each run gets a fresh temporary directory and a fresh interpreter (``python -I -S -B -u``: the standard
library only, no site-packages) in its own session and process group, with an environment of five
variables (no keys, no tokens). The interpreter runs ``_sandbox_harness.py``, which sets the sandbox up
while it is still trusted and then forks the process that executes the solution and its tests:

- rlimits on CPU seconds, address space, processes, file size and open files, no core dumps;
- as root: new PID, network and IPC namespaces (no network at all, not even loopback), and a uid of its
  own per concurrent run, so that RLIMIT_NPROC counts only that run, the supervisor's
  ``/proc/<pid>/environ`` is unreadable and the project's files cannot be written;
- not root: the same namespaces inside a new user namespace where the kernel allows it, else none;
- the trusted half enforces the wall clock and kills the sandboxed half, and with it its whole PID
  namespace, setsid()-escaped grandchildren and zombies included;
- afterwards this side kills the process group and sweeps ``/proc`` for anything left (every process of
  the run's uid as root, else every process started with the run's ``HOME``), removes what the run's uid
  left in the shared temp directories, then the run's own directory (``_sandbox_reaper.py``).

A pass needs exit status 0 *and* a random per-run token on stdout that the harness writes only after the
last test ran, so ``os._exit(0)``, ``sys.exit(0)`` or patched builtins cannot fake one (trace and profile
hooks are cleared before the tests, too). Code that digs the token out of the harness's own frames could
fake one: the verdict guards against accidents and cheap tricks, and containment does not depend on it.

What does not hold without root: RLIMIT_NPROC counts all of the user's processes, code runs as the
supervisor's user (it can read that user's files and the supervisor's ``/proc/<pid>/environ``, and its
files in /tmp stay), and without a PID namespace a grandchild that calls setsid() and re-executes itself
with another environment escapes the sweep. No cgroups are used: memory is capped per process by
RLIMIT_AS, not per run.
"""

from __future__ import annotations

import contextlib
import functools
import os
import secrets
import selectors
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal

from heidi_engine.agents._sandbox_reaper import kill_sweep, remove_files_of, remove_tree, uid_slot
from heidi_engine.bus.redaction import strip_ansi

__all__ = [
    "DEFAULT_LIMITS",
    "Outcome",
    "SandboxLimits",
    "SandboxResult",
    "network_isolation_available",
    "network_isolation_message",
    "run_many",
    "run_solution",
]

Outcome = Literal["pass", "fail", "error", "oom", "timeout", "killed", "incomplete"]

_CLONE_NEWIPC = 0x08000000
_CLONE_NEWPID = 0x20000000
_CLONE_NEWNET = 0x40000000
_NAMESPACES = _CLONE_NEWPID | _CLONE_NEWNET | _CLONE_NEWIPC
# Exit statuses the harness uses for its verdicts; a solution can mimic them, which changes a label only.
_CODES = {"fail": 101, "error": 102, "oom": 103, "setup": 104, "timeout": 105, "cpu": 106}
_NOFILE = 64
# The trusted half enforces timeout_s; this side waits a little longer before it kills the group itself.
_GRACE_S = 1.5
_ENV_KEYS = ("PATH", "LANG", "HOME", "TMPDIR", "PYTHONDONTWRITEBYTECODE")
_HARNESS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_sandbox_harness.py")


@dataclass(frozen=True)
class SandboxLimits:
    """What one run may use. ``max_procs`` (RLIMIT_NPROC) counts per real uid: it bounds a run only
    where the run has a uid of its own (as root); elsewhere the group kill, the sweep and the wall clock
    are what stop a fork bomb."""

    timeout_s: float = 10.0
    cpu_s: int = 10
    memory_mb: int = 1024
    max_procs: int = 64
    file_size_mb: int = 16
    output_limit: int = 4000

    def __post_init__(self) -> None:
        if isinstance(self.timeout_s, bool) or not isinstance(self.timeout_s, (int, float)):
            raise TypeError(f"SandboxLimits.timeout_s must be a number, got {self.timeout_s!r}")
        if not 0 < self.timeout_s <= 86_400:
            raise ValueError(f"SandboxLimits.timeout_s must be in (0, 86400] seconds, got {self.timeout_s!r}")
        minimum = {"cpu_s": 1, "memory_mb": 64, "max_procs": 1, "file_size_mb": 0, "output_limit": 0}
        for name, low in minimum.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"SandboxLimits.{name} must be an int, got {value!r}")
            if value < low:
                raise ValueError(f"SandboxLimits.{name} must be at least {low}, got {value}")


DEFAULT_LIMITS = SandboxLimits()


@dataclass(frozen=True)
class SandboxResult:
    """How one run ended. ``output`` is the ANSI-free tail of stdout and stderr, with a ``[sandbox]``
    line saying why when the sandbox stopped it; it is not redacted (the supervisor redacts at its
    edges)."""

    passed: bool
    outcome: Outcome
    duration_s: float
    output: str
    returncode: int | None
    network_isolated: bool


@dataclass(frozen=True)
class _Plan:
    """How runs are isolated on this machine, chosen once by :func:`_plan`."""

    namespaces: int
    userns: bool
    drop: bool
    why_no_network: str | None = None


def run_solution(
    code: str, tests: str, limits: SandboxLimits = DEFAULT_LIMITS, *, entry_point: str | None = None
) -> SandboxResult:
    """Run ``code`` and then ``tests`` (plain Python with asserts) in one namespace, in the sandbox.

    With ``entry_point`` the solution must define that function, and tests that define
    ``check(candidate)`` (HumanEval style) get it called with that function. Whatever the code does
    comes back as a result; only a sandbox that cannot start at all raises (RuntimeError, OSError).
    """
    for name, value in (("code", code), ("tests", tests)):
        if not isinstance(value, str):
            raise TypeError(f"run_solution: {name} must be a str, got {type(value).__name__}")
    if not isinstance(limits, SandboxLimits):
        raise TypeError(f"run_solution: limits must be a SandboxLimits, got {type(limits).__name__}")
    if entry_point is not None and not (isinstance(entry_point, str) and entry_point.isidentifier()):
        raise ValueError(f"run_solution: entry_point must be a Python identifier, got {entry_point!r}")
    return _execute(code, tests, limits, entry_point, _plan())


def run_many(
    items: Sequence[tuple[str, str]], limits: SandboxLimits = DEFAULT_LIMITS, *, workers: int | None = None
) -> list[SandboxResult]:
    """Run each ``(code, tests)`` pair with :func:`run_solution`, ``workers`` at a time (default: one
    per core); results come back in input order."""
    if workers is None:
        workers = os.cpu_count() or 1
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"run_many: workers must be a positive int, got {workers!r}")
    for index, item in enumerate(items):
        if not (isinstance(item, tuple) and len(item) == 2 and all(isinstance(part, str) for part in item)):
            raise TypeError(f"run_many: item {index} must be a (code, tests) tuple of two str")
    if not items:
        return []
    _plan()  # probe once here rather than in every worker at the same moment
    # Threads only wait on their subprocess, so a thread per worker is enough to fill the cores.
    with ThreadPoolExecutor(max_workers=min(workers, len(items)), thread_name_prefix="sandbox") as pool:
        return list(pool.map(lambda item: run_solution(item[0], item[1], limits), items))


def network_isolation_available() -> bool:
    """Whether generated code runs without any network here (probed once, then cached)."""
    return bool(_plan().namespaces & _CLONE_NEWNET)


def network_isolation_message() -> str | None:
    """Why generated code can reach the network here, for the gate's log; None when it cannot."""
    return _plan().why_no_network


_plan_lock = threading.Lock()


def _plan() -> _Plan:
    with _plan_lock:
        return _probe()


@functools.cache
def _probe() -> _Plan:
    """The strongest isolation that actually works here, found by running a trivial solution under
    each candidate in turn (the harness fails closed when a step of its set-up fails)."""
    root = os.geteuid() == 0
    candidates = [
        _Plan(flags, userns=not root and flags != 0, drop=drop)
        for drop in ((True, False) if root else (False,))
        for flags in (_NAMESPACES, _CLONE_NEWNET, 0)
    ]
    probe_limits = SandboxLimits(timeout_s=20.0, cpu_s=10)
    reasons: list[str] = []
    for plan in candidates:
        result = _execute(
            "import collections, json, math\n", "assert math.sqrt(4) == 2\n", probe_limits, None, plan
        )
        if result.passed:
            if plan.namespaces & _CLONE_NEWNET:
                return plan
            why = "; ".join(reasons) or "no namespace could be created"
            return _Plan(
                plan.namespaces,
                plan.userns,
                plan.drop,
                f"network isolation unavailable ({why}): generated code runs with this machine's network",
            )
        lines = [line for line in result.output.splitlines() if line.strip()]
        reasons.append(lines[-1] if lines else f"probe ended {result.outcome}")
    raise RuntimeError(f"the sandbox cannot run any code on this machine: {'; '.join(reasons)}")


def _execute(
    code: str, tests: str, limits: SandboxLimits, entry_point: str | None, plan: _Plan
) -> SandboxResult:
    token = secrets.token_hex(16).encode()
    # The run works in root/work. root stays ours, so a run cannot rename or replace the directory we
    # remove afterwards (in the sticky /tmp, the owner of an entry may move it).
    root = tempfile.mkdtemp(prefix="heidi-sandbox-")
    workdir = os.path.join(root, "work")
    try:
        with uid_slot(enabled=plan.drop) as uid:
            os.mkdir(workdir, 0o700)
            for name, text in (("solution.py", code), ("tests.py", tests)):
                fd = os.open(os.path.join(workdir, name), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                # Lone surrogates cannot be encoded; replacing them turns such code into a syntax error.
                with open(fd, "w", encoding="utf-8", errors="replace") as handle:
                    handle.write(text)
            if uid is not None:
                os.chmod(root, 0o711)
                os.chown(workdir, uid, uid)
            config = {
                "uid": "" if uid is None else uid, "namespaces": plan.namespaces, "userns": int(plan.userns),
                "entry_point": entry_point or "", "timeout_s": limits.timeout_s, "cpu_s": limits.cpu_s,
                "memory_bytes": limits.memory_mb << 20, "max_procs": limits.max_procs,
                "file_size_bytes": limits.file_size_mb << 20, "nofile": _NOFILE,
                **{f"exit_{verdict}": status for verdict, status in _CODES.items()},
            }  # fmt: skip
            run = _Run(workdir, token, limits)
            try:
                run.start(config)
                run.wait()
            finally:
                run.stop(lambda: kill_sweep(uid, workdir))
                if uid is not None:
                    remove_files_of(uid)
        return run.result(plan)
    finally:
        remove_tree(root)


class _Run:
    """One interpreter in its own process group, with its output kept to a bounded tail."""

    def __init__(self, workdir: str, token: bytes, limits: SandboxLimits) -> None:
        self._workdir = workdir
        self._token = token
        self._limits = limits
        self._tail = bytearray()
        self._cap = max(4 * limits.output_limit, 1024) + len(token) + 2
        self._window = b""
        self._token_seen = False
        self._dropped = 0
        self._timed_out = False
        self._proc: subprocess.Popen[bytes] | None = None
        self._started = 0.0
        self._duration = 0.0

    def start(self, config: Mapping[str, object]) -> None:
        env = dict(
            zip(_ENV_KEYS, ("/usr/bin:/bin", "C.UTF-8", self._workdir, self._workdir, "1"), strict=True)
        )
        python = os.path.realpath(sys.executable) if sys.executable else ""
        if not python:
            raise RuntimeError("the sandbox needs sys.executable to start an interpreter, and it is empty")
        self._started = time.monotonic()
        self._proc = subprocess.Popen(
            [python, "-I", "-S", "-B", "-u", _HARNESS, *(f"{key}={value}" for key, value in config.items())],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            cwd=self._workdir, env=env, start_new_session=True, close_fds=True,
        )  # fmt: skip
        assert self._proc.stdin is not None
        try:
            self._proc.stdin.write(self._token + b"\n")
            self._proc.stdin.close()
        except BrokenPipeError:
            pass  # it died before reading: its exit status tells why

    def wait(self) -> None:
        """Collect output until the interpreter exits or the wall clock (plus grace) runs out."""
        proc = self._proc
        assert proc is not None and proc.stdout is not None
        deadline = self._started + self._limits.timeout_s + _GRACE_S
        with selectors.DefaultSelector() as selector:
            selector.register(proc.stdout.fileno(), selectors.EVENT_READ, "out")
            pidfd = _pidfd(proc.pid)
            if pidfd is not None:
                selector.register(pidfd, selectors.EVENT_READ, "exit")
            try:
                while not _exited(proc.pid):
                    left = deadline - time.monotonic()
                    if left <= 0:
                        self._timed_out = True
                        return
                    # Without a pidfd, exit is noticed by polling every 50 ms.
                    for key, _ in selector.select(min(left, 0.05) if pidfd is None else left):
                        if key.data == "out" and not self._read(proc.stdout.fileno()):
                            selector.unregister(key.fd)
            finally:
                if pidfd is not None:
                    os.close(pidfd)

    def stop(self, sweep: Callable[[], int]) -> None:
        """Kill the group while the leader is still unreaped (so its pgid cannot have been reused), sweep
        up escapees, reap, and drain what is left of the output."""
        proc = self._proc
        if proc is None:
            return
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        survivors = sweep()
        proc.wait()
        self._duration = time.monotonic() - self._started
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        os.set_blocking(fd, False)
        drain_until = time.monotonic() + 1.0
        with selectors.DefaultSelector() as selector:
            selector.register(fd, selectors.EVENT_READ)
            while time.monotonic() < drain_until and selector.select(drain_until - time.monotonic()):
                try:
                    if not self._read(fd):
                        break
                except BlockingIOError:
                    continue
        proc.stdout.close()
        if survivors:
            self._tail += f"\n[sandbox] {survivors} process(es) of this run could not be killed\n".encode()

    def _read(self, fd: int) -> bool:
        chunk = os.read(fd, 65536)
        if not chunk:
            return False
        if not self._token_seen:
            window = self._window + chunk
            self._token_seen = self._token in window
            self._window = window[-len(self._token) :]
        self._tail += chunk
        if len(self._tail) > self._cap:
            self._dropped += len(self._tail) - self._cap
            del self._tail[: len(self._tail) - self._cap]
        return True

    def result(self, plan: _Plan) -> SandboxResult:
        proc = self._proc
        assert proc is not None
        rc = proc.returncode
        limits = self._limits
        outcome, note = _classify(rc, self._token_seen, self._timed_out, limits)
        text = bytes(self._tail).replace(b"\n" + self._token + b"\n", b"\n").replace(self._token, b"")
        output = strip_ansi(text.decode("utf-8", errors="replace")).rstrip()
        if self._dropped:
            output = f"[sandbox] {self._dropped} earlier bytes of output dropped\n{output}"
        if note:
            output = f"{output}\n[sandbox] {note}".lstrip("\n")
        output = output[-limits.output_limit :] if limits.output_limit else ""
        return SandboxResult(
            passed=outcome == "pass", outcome=outcome, duration_s=self._duration, output=output,
            returncode=rc, network_isolated=bool(plan.namespaces & _CLONE_NEWNET),
        )  # fmt: skip


def _classify(
    rc: int | None, token_seen: bool, timed_out: bool, limits: SandboxLimits
) -> tuple[Outcome, str]:
    if timed_out or rc == _CODES["timeout"]:
        return "timeout", f"wall-clock timeout ({limits.timeout_s:g} s): killed"
    if rc == _CODES["cpu"] or rc == -signal.SIGXCPU:
        return "timeout", f"CPU limit ({limits.cpu_s} s) exceeded: killed"
    if rc == 0:
        if token_seen:
            return "pass", ""
        return "incomplete", "exited with status 0 before the tests finished"
    if rc is None:
        return "error", "no exit status"
    if rc < 0:
        sig = -rc
        if sig == signal.SIGXFSZ:
            return "killed", f"file size limit ({limits.file_size_mb} MB) exceeded"
        try:
            return "killed", f"killed by {signal.Signals(sig).name}"
        except ValueError:
            return "killed", f"killed by signal {sig}"
    verdicts: dict[int, tuple[Outcome, str]] = {
        _CODES["fail"]: ("fail", ""),
        _CODES["error"]: ("error", ""),
        _CODES["oom"]: ("oom", f"out of memory (limit {limits.memory_mb} MB)"),
        _CODES["setup"]: ("error", "the sandbox could not be set up"),
    }
    return verdicts.get(rc, ("incomplete", f"exited with status {rc} before the tests finished"))


def _pidfd(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


def _exited(pid: int) -> bool:
    # WNOWAIT leaves the leader a zombie: its pid, and so its process group id, stays ours until reaped.
    return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
