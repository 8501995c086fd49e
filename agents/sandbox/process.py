"""One sandboxed interpreter from start to verdict: its process, its output tail, its limits, its end.

:class:`SandboxRun` starts the command in its own session and process group, moves it into the run's
:class:`~heidi_engine.agents.sandbox.limits.RunLimit` before it can fork, hands it the pass token on
stdin, collects a bounded tail of its output while polling the limit and the wall clock, kills what is
left, and turns the exit status into an outcome (:func:`classify`).
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from heidi_engine.agents.sandbox.limits import RunLimit
from heidi_engine.bus.redaction import strip_ansi

__all__ = ["CODES", "Outcome", "SandboxResult", "SandboxRun", "classify"]

Outcome = Literal["pass", "fail", "error", "oom", "timeout", "killed", "incomplete"]

# Exit statuses the harness uses for its verdicts; a solution can mimic them, which changes a label only.
CODES = {"fail": 101, "error": 102, "oom": 103, "setup": 104, "timeout": 105, "cpu": 106}
# The trusted half enforces timeout_s; this side waits a little longer before it kills the group itself.
_GRACE_S = 1.5
# How often the run's memory and CPU time are looked at (a cgroup costs two small reads; a tree, a /proc scan).
_POLL_S = {"process tree": 0.1}
_DEFAULT_POLL_S = 0.05
# A gate for commands that fork at once (bwrap): they start only after their pid has joined the limit.
_GATE = ["/bin/sh", "-c", 'read -r _ && exec "$@"', "sandbox-gate"]


@dataclass(frozen=True)
class SandboxResult:
    """How one run ended. ``output`` is the ANSI-free tail of stdout and stderr, with a ``[sandbox]``
    line saying why when the sandbox stopped it; it is not redacted (the supervisor redacts at its
    edges). ``backend`` is the sandbox that ran it: bwrap, namespaces or none."""

    passed: bool
    outcome: Outcome
    duration_s: float
    output: str
    returncode: int | None
    network_isolated: bool
    backend: str = "namespaces"


@dataclass(frozen=True)
class RunSpec:
    """What :class:`SandboxRun` needs to know about the limits (a view of ``SandboxLimits``)."""

    timeout_s: float
    cpu_s: int
    memory_mb: int
    file_size_mb: int
    output_limit: int


class SandboxRun:
    """One interpreter in its own process group, with its output kept to a bounded tail."""

    def __init__(self, token: bytes, limits: RunSpec, limit: RunLimit) -> None:
        self._token = token
        self._limits = limits
        self._limit = limit
        self._tail = bytearray()
        self._cap = max(4 * limits.output_limit, 1024) + len(token) + 2
        self._window = b""
        self._token_seen = False
        self._dropped = 0
        self._timed_out = False
        self._proc: subprocess.Popen[bytes] | None = None
        self._started = 0.0
        self._duration = 0.0

    def start(
        self, argv: Sequence[str], *, cwd: str, env: Mapping[str, str], fds: Sequence[int] = (), gate: bool
    ) -> None:
        """Start ``argv``; with ``gate`` it waits on stdin for a line before it execs (see ``_GATE``)."""
        self._started = time.monotonic()
        self._proc = subprocess.Popen(
            [*_GATE, *argv] if gate else list(argv),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            cwd=cwd, env=dict(env), start_new_session=True, close_fds=True, pass_fds=tuple(fds),
        )  # fmt: skip
        assert self._proc.stdin is not None
        try:
            self._limit.attach(self._proc.pid)
        except OSError as exc:
            self._proc.kill()
            self._proc.wait()
            raise RuntimeError(f"the sandbox cannot put the run into its cgroup: {exc}") from None
        try:
            self._proc.stdin.write((b"go\n" if gate else b"") + self._token + b"\n")
            self._proc.stdin.close()
        except BrokenPipeError:
            pass  # it died before reading: its exit status tells why

    def wait(self) -> None:
        """Collect output until the interpreter exits, the wall clock (plus grace) runs out or the run
        goes over its memory or CPU budget."""
        proc = self._proc
        assert proc is not None and proc.stdout is not None
        deadline = self._started + self._limits.timeout_s + _GRACE_S
        poll = _POLL_S.get(self._limit.kind, _DEFAULT_POLL_S)
        next_check = time.monotonic() + poll
        with selectors.DefaultSelector() as selector:
            selector.register(proc.stdout.fileno(), selectors.EVENT_READ, "out")
            pidfd = _pidfd(proc.pid)
            if pidfd is not None:
                selector.register(pidfd, selectors.EVENT_READ, "exit")
            try:
                while not _exited(proc.pid):
                    now = time.monotonic()
                    left = deadline - now
                    if left <= 0:
                        self._timed_out = True
                        return
                    if now >= next_check:
                        if self._limit.check():
                            return
                        next_check = now + poll
                    for key, _ in selector.select(min(left, max(0.0, next_check - now))):
                        if key.data == "out" and not self._read(proc.stdout.fileno()):
                            selector.unregister(key.fd)
            finally:
                if pidfd is not None:
                    os.close(pidfd)

    def stop(self, sweep: Callable[[], int]) -> None:
        """Kill the run (its limit's processes, then the group while the leader is still unreaped, so
        its pgid cannot have been reused), sweep up escapees, reap, and drain what is left of the output."""
        proc = self._proc
        if proc is None:
            return
        survivors = self._limit.kill() if proc.returncode is None else 0
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        survivors += sweep()
        proc.wait()
        self._limit.check()  # an OOM kill just before the exit counts
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

    def result(self, backend: str, network_isolated: bool) -> SandboxResult:
        """The verdict, once :meth:`stop` has returned."""
        proc = self._proc
        assert proc is not None
        rc = proc.returncode
        if backend == "bwrap" and rc is not None and 128 < rc < 128 + signal.NSIG:
            rc = 128 - rc  # bwrap reports a child killed by signal N as 128 + N
        limits = self._limits
        outcome, note = classify(rc, self._token_seen, self._timed_out, limits)
        over = self._limit.over
        if over is not None and outcome != "pass":
            outcome, note = ("oom" if over.startswith("memory") else "timeout"), f"{over}: killed"
        text = bytes(self._tail).replace(b"\n" + self._token + b"\n", b"\n").replace(self._token, b"")
        output = strip_ansi(text.decode("utf-8", errors="replace")).rstrip()
        if self._dropped:
            output = f"[sandbox] {self._dropped} earlier bytes of output dropped\n{output}"
        if note:
            output = f"{output}\n[sandbox] {note}".lstrip("\n")
        output = output[-limits.output_limit :] if limits.output_limit else ""
        return SandboxResult(
            passed=outcome == "pass", outcome=outcome, duration_s=self._duration, output=output,
            returncode=rc, network_isolated=network_isolated, backend=backend,
        )  # fmt: skip


def classify(rc: int | None, token_seen: bool, timed_out: bool, limits: RunSpec) -> tuple[Outcome, str]:
    """The outcome of an exit status ``rc`` (negative: killed by that signal) and why, for the output."""
    if timed_out or rc == CODES["timeout"]:
        return "timeout", f"wall-clock timeout ({limits.timeout_s:g} s): killed"
    if rc == CODES["cpu"] or rc == -signal.SIGXCPU:
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
        CODES["fail"]: ("fail", ""),
        CODES["error"]: ("error", ""),
        CODES["oom"]: ("oom", f"out of memory (limit {limits.memory_mb} MB)"),
        CODES["setup"]: ("error", "the sandbox could not be set up"),
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
