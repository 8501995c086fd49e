"""Agent processes: started in their own process group, tied to the supervisor's life, killed as a group.

An agent is started with ``start_new_session`` (its own group, so a signal to the group reaches any
grandchild it forks) and with PR_SET_PDEATHSIG, so it dies with the supervisor even after a kill -9.
The death signal is armed in the child right after fork (``preexec_fn``); since the parent may already be
gone by then, the child also checks ``getppid()`` and exits if it was re-parented. The supervisor calls
:func:`spawn` only from its main thread: PDEATHSIG fires when the *thread* that forked exits.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from heidi_engine.bus.storage import FILE_MODE

_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _child_setup(parent_pid: int) -> None:
    os.umask(0o077)  # whatever an agent writes under the home is private (0600 files, 0700 folders)
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:
        os._exit(1)


def describe_exit(returncode: int) -> str:
    """``exit code 3`` or ``signal SIGKILL`` for an agent's return code."""
    if returncode < 0:
        try:
            return f"signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"signal {-returncode}"
    return f"exit code {returncode}"


@dataclass
class AgentProcess:
    """One running agent: its ``Popen``, group and bookkeeping for silence detection."""

    stage: str
    popen: subprocess.Popen[bytes]
    started: float
    last_seen: float
    attempt: int = 0
    parked: bool = False
    log_path: str | None = None
    kill_deadline: float | None = field(default=None)
    done_seen: bool = False
    heard: bool = False
    exited_at: float | None = None

    @property
    def pid(self) -> int:
        """The agent's pid (also its process group id)."""
        return self.popen.pid

    def poll(self) -> int | None:
        """The return code once it has exited, else ``None``.

        Whatever the agent left in its group (a forked grandchild) is killed before the agent is reaped:
        until then the agent's pid, which is the group's id, cannot be reused, so the signal reaches
        only the agent's own group and never an unrelated one.
        """
        if self.popen.returncode is not None:
            return self.popen.returncode
        try:
            info = os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:  # reaped already (not by us): Popen has its status
            return self.popen.poll()
        if info is None or info.si_pid == 0:
            return None
        signal_group(self.pid, signal.SIGKILL)
        return self.popen.wait()

    def begin_terminate(self, grace_s: float, now: float) -> None:
        """SIGTERM the group now; :meth:`escalate` sends SIGKILL once ``grace_s`` has passed."""
        if self.kill_deadline is None:
            signal_group(self.pid, signal.SIGTERM)
            self.kill_deadline = now + grace_s

    def escalate(self, now: float) -> None:
        """SIGKILL the group when the grace period is over (while the agent is not yet reaped)."""
        if self.kill_deadline is not None and now >= self.kill_deadline and self.popen.returncode is None:
            signal_group(self.pid, signal.SIGKILL)


def spawn(
    stage: str,
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: str,
    log_path: str,
    attempt: int = 0,
    now: float | None = None,
) -> AgentProcess:
    """Start ``argv`` as the agent for ``stage``; stdout/stderr go to ``log_path`` (0600).

    ``now`` is the caller's clock reading (the driver's, so that silence is measured on one clock)."""
    parent = os.getpid()
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, FILE_MODE)
    try:
        popen = subprocess.Popen(
            list(argv),
            env=dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=fd,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=lambda: _child_setup(parent),
            close_fds=True,
        )
    finally:
        os.close(fd)
    if now is None:
        now = time.monotonic()
    return AgentProcess(stage, popen, now, now, attempt, log_path=log_path)


def last_log_line(log_path: str | None, *, limit: int = 300) -> str | None:
    """The last non-empty line of an agent's log (an agent that exits on a fatal error writes its cause
    there last), cut to ``limit`` characters; ``None`` when there is none. Reads only the file's tail."""
    if not log_path:
        return None
    try:
        with open(log_path, "rb") as handle:
            handle.seek(max(0, os.fstat(handle.fileno()).st_size - 4096))
            tail = handle.read()
    except OSError:
        return None
    lines = [line.strip() for line in tail.decode("utf-8", "replace").splitlines() if line.strip()]
    if not lines:
        return None
    return lines[-1] if len(lines[-1]) <= limit else lines[-1][: limit - 1] + "…"


def signal_group(pgid: int, sig: int) -> bool:
    """Send ``sig`` to process group ``pgid``; False when the group no longer exists."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False
    return True


def terminate_group(agent: AgentProcess, grace_s: float) -> int:
    """SIGTERM the agent's group, SIGKILL it after ``grace_s``; reap the agent; returns its return code.

    The group is signalled only while the agent (its leader) is unreaped, so a reused pid is never hit;
    once the leader has exited, :meth:`AgentProcess.poll` kills what is left of the group and reaps it.
    """
    if agent.popen.returncode is None:
        signal_group(agent.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        code = agent.poll()
        if code is not None:
            return code
        time.sleep(0.02)
    if agent.popen.returncode is None:
        signal_group(agent.pid, signal.SIGKILL)
    try:
        agent.popen.wait(timeout=5)
    except subprocess.TimeoutExpired:  # pragma: no cover - a process in uninterruptible sleep
        return -signal.SIGKILL
    return agent.popen.returncode


def kill_stale_group(pgid: int, run_id: str) -> bool:
    """Kill a group recorded by a previous supervisor, only if its leader still belongs to ``run_id``.

    The pid may have been reused by an unrelated process since; its environment tells (we started the
    agent with AUTOTRAIN_RUN_ID). Any member of the group that still carries the run id is enough.
    """
    matched = False
    for proc in psutil.process_iter(["pid"]):
        try:
            if os.getpgid(proc.pid) != pgid:
                continue
            if proc.environ().get("AUTOTRAIN_RUN_ID") == run_id:
                matched = True
                break
        except (psutil.Error, ProcessLookupError, PermissionError, OSError):
            continue
    if matched:
        signal_group(pgid, signal.SIGKILL)
    return matched


def agent_argv(env: Mapping[str, str], stage: str) -> list[str]:
    """The command of a stage's agent: ``python -m heidi_engine.agents.<stage>``, unless
    ``AUTOTRAIN_AGENT_<STAGE>`` names another (scripted agents in tests, a custom stage in production)."""
    custom = env.get(f"AUTOTRAIN_AGENT_{stage.upper()}")
    if custom:
        return shlex.split(custom)
    return [sys.executable, "-m", f"heidi_engine.agents.{stage}"]


def agent_env(
    base: Mapping[str, str],
    *,
    home: Path,
    run_dir: Path,
    stage: str,
    round_no: int,
    attempt: int,
    resume: bool,
    config: dict[str, Any] | None,
) -> dict[str, str]:
    """The environment an agent starts with: the supervisor's, plus where and what it is to work on.

    The effective configuration travels unredacted (a credential in TEACHER_BASE_URL is needed by the
    agent); ``config.json`` on disk keeps the redacted copy. Our children's environments are private to
    them, and the sandbox scrubs the environment before it runs generated code.
    """
    env = dict(base)
    env.update({
        "AUTOTRAIN_HOME": str(home), "AUTOTRAIN_BUS": str(home / "run" / "bus.json"),
        "AUTOTRAIN_RUN_ID": run_dir.name, "AUTOTRAIN_RUN_DIR": str(run_dir),
        "AUTOTRAIN_STAGE": stage, "AUTOTRAIN_ROUND": str(round_no), "AUTOTRAIN_ATTEMPT": str(attempt),
        "AUTOTRAIN_RESUME": "1" if (resume or attempt > 0) else "0",
        "AUTOTRAIN_CONFIG_JSON": str(run_dir / "config.json"), "PYTHONUNBUFFERED": "1",
        # Agent output goes to log files, where progress bars are only noise.
        "TQDM_DISABLE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    })
    if config is not None:
        env["AUTOTRAIN_CONFIG_DATA"] = json.dumps(config)
    return env
