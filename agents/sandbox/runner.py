"""The sandbox that runs generated code against its unit tests (the unit-test gate and eval).

The ``SANDBOX`` setting picks the backend (``heidi_engine.bus.isolation``): ``bwrap`` (bubblewrap),
``namespaces`` (the built-in one, root only) or ``none`` (explicitly unconfined); ``auto`` takes bwrap
when it is installed, else namespaces as root, else refuses with a line that says what to install.

Every backend runs a fresh interpreter (``python -I -S -B -u``: the standard library only) in its own
session and process group, with an environment of five variables (no keys, no tokens). The interpreter
runs ``harness.py``, which sets the sandbox up while it is still trusted and then forks the
process that executes the solution and its tests, with rlimits on CPU seconds, address space, processes,
file size and open files, no core dumps and NO_NEW_PRIVS; the trusted half enforces the wall clock.

- ``bwrap`` (``bwrap.py``): a read-only root of its own that shows only the system's ``/usr`` and the
  interpreter, read-only, and size-limited tmpfs for ``/tmp``, ``/dev/shm`` and the working folder (the
  only places it can write); new user (not as root), PID, network, IPC, UTS and cgroup namespaces; as
  root the code also gets a uid of its own.
- ``namespaces``: new PID, network, IPC and mount namespaces and a uid of its own per concurrent run;
  size-limited tmpfs of its own over the host's ``/tmp``, ``/var/tmp``, ``/dev/shm``, ``/run/lock`` and
  its working folder (and, should no mount namespace be possible, those folders are cleaned of that
  uid's files afterwards).
- ``none``: rlimits, the wall clock and the group kill, nothing more.

A file in a tmpfs is memory, so the run's tmpfs come out of its memory budget (:meth:`SandboxLimits.budget`):
each gets ``scratch_mb``, cut so that together they take at most a quarter of ``memory_mb``, and its
processes get the rest, as their rlimit and as the limit of the run as a whole. In the backends that
confine, a seccomp filter (``seccomp.py``) refuses the kernel keyring, which no namespace covers.

Each run as a whole is held to its memory, process count and CPU time (``limits.py``: a cgroup
of its own where one can be made, else polling of its process tree), and killed with everything it
started, afterwards (``reaper.py``).

A pass needs exit status 0 *and* a random per-run token on stdout that the harness writes only after the
last test ran, so ``os._exit(0)``, ``sys.exit(0)`` or patched builtins cannot fake one (trace and profile
hooks are cleared before the tests, too). Code that digs the token out of the harness's own frames could
fake one: the verdict guards against accidents and cheap tricks, and containment does not depend on it.
"""

from __future__ import annotations

import functools
import os
import resource
import secrets
import shutil
import sys
import tempfile
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from heidi_engine.agents.sandbox.bwrap import TMPFS, bwrap_command
from heidi_engine.agents.sandbox.limits import run_limit, usable_cpus
from heidi_engine.agents.sandbox.process import CODES, Outcome, RunSpec, SandboxResult, SandboxRun
from heidi_engine.agents.sandbox.reaper import SHARED_DIRS, kill_sweep, remove_files_of, remove_tree, uid_slot
from heidi_engine.agents.sandbox.seccomp import keyring_filter
from heidi_engine.bus.isolation import NONE_WARNING, SandboxBackend, SandboxUnavailable, choose_sandbox
from heidi_engine.bus.storage import DIR_MODE, FILE_MODE

__all__ = [
    "DEFAULT_LIMITS",
    "Outcome",
    "SandboxLimits",
    "SandboxResult",
    "SandboxUnavailable",
    "network_isolation_available",
    "network_isolation_message",
    "run_many",
    "run_solution",
    "sandbox_backend",
    "usable_cpus",
]

_CLONE_NEWNS = 0x00020000
_CLONE_NEWIPC = 0x08000000
_CLONE_NEWPID = 0x20000000
_CLONE_NEWNET = 0x40000000
_NAMESPACES = _CLONE_NEWPID | _CLONE_NEWNET | _CLONE_NEWIPC | _CLONE_NEWNS
_PAGE = resource.getpagesize()
_NOFILE = 64
_ENV_KEYS = ("PATH", "LANG", "HOME", "TMPDIR", "PYTHONDONTWRITEBYTECODE")
_HARNESS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "harness.py")


@dataclass(frozen=True)
class SandboxLimits:
    """What one test run may use. ``memory_mb``, ``max_procs`` and ``cpu_s`` hold for the run as a whole
    (all its processes together) and, as rlimits, for each of its processes too; ``memory_mb`` covers its
    tmpfs as well (:meth:`budget`), each at most ``scratch_mb``."""

    timeout_s: float = 10.0
    cpu_s: int = 10
    memory_mb: int = 1024
    max_procs: int = 64
    file_size_mb: int = 16
    output_limit: int = 4000
    scratch_mb: int = 64

    def __post_init__(self) -> None:
        if isinstance(self.timeout_s, bool) or not isinstance(self.timeout_s, (int, float)):
            raise TypeError(f"SandboxLimits.timeout_s must be a number, got {self.timeout_s!r}")
        if not 0 < self.timeout_s <= 86_400:
            raise ValueError(f"SandboxLimits.timeout_s must be in (0, 86400] seconds, got {self.timeout_s!r}")
        minimum = {
            "cpu_s": 1,
            "memory_mb": 64,
            "max_procs": 1,
            "file_size_mb": 0,
            "output_limit": 0,
            "scratch_mb": 1,
        }
        for name, low in minimum.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"SandboxLimits.{name} must be an int, got {value!r}")
            if value < low:
                raise ValueError(f"SandboxLimits.{name} must be at least {low}, got {value}")

    def budget(self, tmpfs_count: int) -> tuple[int, int]:
        """``memory_mb`` split between a run's ``tmpfs_count`` tmpfs and its processes, in bytes: (the
        size of each tmpfs, the memory of all processes). Each tmpfs gets ``scratch_mb``, cut so that
        together they take at most a quarter of the budget, and the processes get the rest: what the run
        writes to its tmpfs plus what its processes hold never exceeds ``memory_mb``."""
        total = self.memory_mb << 20
        if tmpfs_count <= 0:
            return 0, total
        each = min(self.scratch_mb << 20, total // 4 // tmpfs_count)
        each -= each % _PAGE  # the kernel rounds a tmpfs size up to whole pages
        return each, total - each * tmpfs_count

    def spec(self, memory_bytes: int) -> RunSpec:
        """The part of the limits the run's own process handling needs, its processes holding at most
        ``memory_bytes`` (their share of :meth:`budget`)."""
        return RunSpec(self.timeout_s, self.cpu_s, memory_bytes >> 20, self.file_size_mb, self.output_limit)


DEFAULT_LIMITS = SandboxLimits()


@dataclass(frozen=True)
class _Plan:
    """How runs are isolated on this machine, chosen once per backend by :func:`_plan`."""

    namespaces: int
    userns: bool
    drop: bool
    why_no_network: str | None = None
    backend: SandboxBackend = "namespaces"


def run_solution(
    code: str,
    tests: str,
    limits: SandboxLimits = DEFAULT_LIMITS,
    *,
    entry_point: str | None = None,
    sandbox: str = "auto",
) -> SandboxResult:
    """Run ``code`` and then ``tests`` (plain Python with asserts) in one namespace, in the sandbox
    that the ``SANDBOX`` mode ``sandbox`` names.

    With ``entry_point`` the solution must define that function, and tests that define
    ``check(candidate)`` (HumanEval style) get it called with that function. Whatever the code does
    comes back as a result; only a sandbox that cannot start at all raises (SandboxUnavailable and other
    RuntimeErrors, OSError).
    """
    for name, value in (("code", code), ("tests", tests)):
        if not isinstance(value, str):
            raise TypeError(f"run_solution: {name} must be a str, got {type(value).__name__}")
    if not isinstance(limits, SandboxLimits):
        raise TypeError(f"run_solution: limits must be a SandboxLimits, got {type(limits).__name__}")
    if entry_point is not None and not (isinstance(entry_point, str) and entry_point.isidentifier()):
        raise ValueError(f"run_solution: entry_point must be a Python identifier, got {entry_point!r}")
    return _execute(code, tests, limits, entry_point, _plan(sandbox))


def run_many(
    items: Sequence[tuple[str, str]],
    limits: SandboxLimits = DEFAULT_LIMITS,
    *,
    workers: int | None = None,
    sandbox: str = "auto",
) -> list[SandboxResult]:
    """Run each ``(code, tests)`` pair with :func:`run_solution`, ``workers`` at a time (default: the
    CPUs this process may use, :func:`usable_cpus`); results come back in input order."""
    if workers is None:
        workers = usable_cpus()
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"run_many: workers must be a positive int, got {workers!r}")
    for index, item in enumerate(items):
        if not (isinstance(item, tuple) and len(item) == 2 and all(isinstance(part, str) for part in item)):
            raise TypeError(f"run_many: item {index} must be a (code, tests) tuple of two str")
    if not items:
        return []
    _plan(sandbox)  # probe once here rather than in every worker at the same moment
    # Threads only wait on their subprocess, so a thread per worker is enough to fill the cores.
    with ThreadPoolExecutor(max_workers=min(workers, len(items)), thread_name_prefix="sandbox") as pool:
        return list(pool.map(lambda item: run_solution(item[0], item[1], limits, sandbox=sandbox), items))


def sandbox_backend(sandbox: str = "auto") -> SandboxBackend:
    """The backend that the ``SANDBOX`` mode ``sandbox`` runs code with here, probed (once) to work;
    raises SandboxUnavailable (one line saying what to install) or RuntimeError when none can."""
    return _plan(sandbox).backend


def network_isolation_available(sandbox: str = "auto") -> bool:
    """Whether generated code runs without any network here (probed once, then cached)."""
    return _plan(sandbox).why_no_network is None


def network_isolation_message(sandbox: str = "auto") -> str | None:
    """Why generated code can reach the network here, for the gate's log; None when it cannot."""
    return _plan(sandbox).why_no_network


_plan_lock = threading.Lock()


def _plan(sandbox: str) -> _Plan:
    backend = choose_sandbox(sandbox).backend
    with _plan_lock:
        return _probe(backend)


@functools.cache
def _probe(backend: SandboxBackend) -> _Plan:
    """The strongest isolation of ``backend`` that actually works here, found by running a trivial
    solution under each candidate in turn (the harness fails closed when a step of its set-up fails)."""
    root = os.geteuid() == 0
    if backend == "none":
        candidates = [_Plan(0, userns=False, drop=False, backend="none")]
    elif backend == "bwrap":
        candidates = [_Plan(0, userns=False, drop=root, backend="bwrap")]
    else:
        candidates = [
            _Plan(flags, userns=not root and flags != 0, drop=drop)
            for drop in ((True, False) if root else (False,))
            for flags in (_NAMESPACES, _CLONE_NEWNET | _CLONE_NEWNS, _CLONE_NEWNET, 0)
        ]
    probe_limits = SandboxLimits(timeout_s=20.0, cpu_s=10)
    reasons: list[str] = []
    for plan in candidates:
        result = _execute(
            "import collections, json, math\n", "assert math.sqrt(4) == 2\n", probe_limits, None, plan
        )
        if result.passed:
            if backend == "bwrap" or plan.namespaces & _CLONE_NEWNET:
                return plan
            why = "; ".join(reasons) or "no namespace could be created"
            message = (
                f"network isolation unavailable ({why}): generated code runs with this machine's network"
            )
            return _Plan(
                plan.namespaces,
                plan.userns,
                plan.drop,
                NONE_WARNING if backend == "none" else message,
                backend,
            )
        lines = [line for line in result.output.splitlines() if line.strip()]
        reasons.append(lines[-1] if lines else f"probe ended {result.outcome}")
    hint = (
        " (bubblewrap needs unprivileged user namespaces: check the sysctls kernel.unprivileged_userns_clone"
        " and kernel.apparmor_restrict_unprivileged_userns)"
        if backend == "bwrap" and not root
        else ""
    )
    raise RuntimeError(
        f"the {backend} sandbox cannot run any code on this machine: {'; '.join(reasons)}{hint}"
    )


def _execute(
    code: str, tests: str, limits: SandboxLimits, entry_point: str | None, plan: _Plan
) -> SandboxResult:
    token = secrets.token_hex(16).encode()
    tmpfs_bytes, memory_bytes = limits.budget(_tmpfs_count(plan))
    seccomp = "" if plan.backend == "none" else _seccomp_hex()
    # Outside bwrap the run works in root/work. root stays ours, so a run cannot rename or replace the
    # directory we remove afterwards (in the sticky /tmp, the owner of an entry may move it).
    root = tempfile.mkdtemp(prefix="heidi-sandbox-")
    workdir = os.path.join(root, "work")
    limit = run_limit(memory_bytes, limits.max_procs, limits.cpu_s)
    try:
        with uid_slot(enabled=plan.drop) as uid:
            config = {
                "uid": "" if uid is None else uid, "namespaces": plan.namespaces, "userns": int(plan.userns),
                "entry_point": entry_point or "", "timeout_s": limits.timeout_s, "cpu_s": limits.cpu_s,
                "memory_bytes": memory_bytes, "max_procs": limits.max_procs,
                "file_size_bytes": limits.file_size_mb << 20, "nofile": _NOFILE, "tmpfs_bytes": tmpfs_bytes,
                "private": ":".join(SHARED_DIRS), "seccomp": seccomp,
                **{f"exit_{verdict}": status for verdict, status in CODES.items()},
            }  # fmt: skip
            arguments = [f"{key}={value}" for key, value in config.items()]
            run = SandboxRun(token, limits.spec(memory_bytes), limit)
            try:
                if plan.backend == "bwrap":
                    _start_bwrap(run, code, tests, tmpfs_bytes, arguments)
                    home: str | None = None  # every bwrap run has HOME=/work: not a mark of this one
                else:
                    _start_here(run, workdir, code, tests, uid, arguments)
                    home = workdir
                run.wait()
            finally:
                run.stop(lambda: kill_sweep(uid, home) if uid is not None or home is not None else 0)
                if uid is not None and plan.backend != "bwrap":  # bwrap's /tmp and /dev/shm were its own
                    remove_files_of(uid)
        return run.result(plan.backend, plan.why_no_network is None)
    finally:
        limit.close()
        remove_tree(root)


def _tmpfs_count(plan: _Plan) -> int:
    """How many tmpfs a run of ``plan`` writes to, each a share of its memory (harness.py mounts those of
    the built-in sandbox: one per shared folder and its working folder)."""
    if plan.backend == "bwrap":
        return len(TMPFS)
    return len(SHARED_DIRS) + 1 if plan.namespaces & _CLONE_NEWNS else 0


@functools.cache
def _seccomp_hex() -> str:
    """The keyring filter for this interpreter, as the harness takes it; refuses to confine without it."""
    try:
        return keyring_filter().hex()
    except ValueError as exc:
        raise SandboxUnavailable(
            f"the sandbox cannot keep generated code off the kernel keyring here ({exc}): "
            "set SANDBOX to none to run it unconfined"
        ) from None


def _start_bwrap(run: SandboxRun, code: str, tests: str, tmpfs_bytes: int, arguments: list[str]) -> None:
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        raise SandboxUnavailable("bwrap is no longer on PATH: install bubblewrap")
    files = {"solution.py": code, "tests.py": tests}
    command = bwrap_command(bwrap, _HARNESS, files, tmpfs_bytes, arguments, root=os.geteuid() == 0)
    try:
        run.start(
            command.argv,
            cwd="/",
            env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
            fds=command.fds,
            gate=True,
        )
    finally:
        for fd in command.fds:
            os.close(fd)


def _start_here(
    run: SandboxRun, workdir: str, code: str, tests: str, uid: int | None, arguments: list[str]
) -> None:
    os.mkdir(workdir, DIR_MODE)
    for name, text in (("solution.py", code), ("tests.py", tests)):
        fd = os.open(os.path.join(workdir, name), os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
        # Lone surrogates cannot be encoded; replacing them turns such code into a syntax error.
        with open(fd, "w", encoding="utf-8", errors="replace") as handle:
            handle.write(text)
    if uid is not None:
        os.chmod(os.path.dirname(workdir), 0o711)
        os.chown(workdir, uid, uid)
    python = os.path.realpath(sys.executable) if sys.executable else ""
    if not python:
        raise RuntimeError("the sandbox needs sys.executable to start an interpreter, and it is empty")
    values = ("/usr/bin:/bin", "C.UTF-8", workdir, workdir, "1")
    # The harness reads the token before it forks, so it joins the run's limit in time without a gate.
    run.start(
        [python, "-I", "-S", "-B", "-u", _HARNESS, *arguments],
        cwd=workdir, env=dict(zip(_ENV_KEYS, values, strict=True)), gate=False,
    )  # fmt: skip
