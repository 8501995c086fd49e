"""The run driver: rounds × stages, each stage an agent subprocess, with stop, pause and restarts.

The driver is ticked by the broker's loop and never blocks. It decides what runs next, starts agents,
watches them (exit status and silence), restarts a crashed one with growing backoff up to a bound, and
reports every transition through its host (events and status changes), never writing files itself.

Agents tell how they ended by their exit status (:mod:`heidi_engine.bus.exit_status`): 0 the stage is
complete; ``EXIT_STOPPED`` they stopped at a boundary on request (the stage is not complete);
``EXIT_FATAL`` a permanent error that a retry cannot fix (bad data, missing model): the run fails at once;
``EXIT_NOSPACE`` the disk is full: the stage starts again (resuming) every few seconds until it has room,
without using up its restarts. Anything else is a crash.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from heidi_engine.bus.event import PIPELINE_STAGES
from heidi_engine.bus.exit_status import EXIT_FATAL, EXIT_NOSPACE, EXIT_STOPPED
from heidi_engine.bus.state import RunState
from heidi_engine.bus.storage import DIR_MODE
from heidi_engine.supervisor.process import AgentProcess, describe_exit, last_log_line, spawn

BACKOFF_BASE_S = 1.0
BACKOFF_MAX_S = 30.0
DRAIN_S = 30.0  # how long an exited agent's final report is awaited
NOSPACE_RETRY_S = 10.0  # the longest wait before a stage that found the disk full is tried again


class RunHost(Protocol):
    """What the driver needs from the supervisor."""

    state: RunState

    def emit(
        self,
        stage: str,
        event_type: str,
        *,
        round_no: int,
        level: str = "info",
        message: str = "",
        error: str | None = None,
    ) -> None: ...

    def set_status(self, **fields: object) -> None: ...

    def finish_run(self, status: str, message: str, *, error: str | None = None) -> None: ...

    def stage_completed(self, stage: str, round_no: int) -> None: ...

    def agents_changed(self, agents: Mapping[str, AgentProcess]) -> None: ...

    def report_problem(self, site: str, problem: str | None) -> bool: ...

    def undelivered(self, sender: str) -> int: ...


@dataclass(frozen=True)
class DriverSettings:
    """Knobs of the driver, from the run's configuration."""

    rounds: int
    max_restarts: int
    heartbeat_timeout_s: float
    stop_grace_s: float


def backoff_s(attempt: int) -> float:
    """Delay before restart ``attempt`` (1-based): 1, 2, 4 … seconds, capped."""
    return float(min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2 ** max(0, attempt - 1)))


class Pipeline:
    """Drives one run from its first pending stage to completion, stop or failure."""

    def __init__(
        self,
        host: RunHost,
        settings: DriverSettings,
        *,
        run_dir: Path,
        argv_for: Callable[[str], Sequence[str]],
        env_for: Callable[[str, int, int], Mapping[str, str]],
        completed: set[tuple[int, str]] | None = None,
        spawner: Callable[..., AgentProcess] = spawn,
    ) -> None:
        self.host = host
        self._spawn = spawner
        self.settings = settings
        self.run_dir = run_dir
        self._argv_for = argv_for
        self._env_for = env_for
        done = completed or set()
        self.pending: list[tuple[int, str]] = [
            (r, s) for r in range(1, settings.rounds + 1) for s in PIPELINE_STAGES if (r, s) not in done
        ]
        self._round_ended = {r for r in range(1, settings.rounds + 1) if (r, "round_end") in done}
        self._round_started: set[int] = set()
        self.agent: AgentProcess | None = None
        self.attempt = 0  # agent starts of the current stage so far (the next one resumes when > 0)
        self.crashes = 0  # of those, the ones that count against max_restarts
        self.nospace = 0  # of those, the ones that found the disk full (they do not count)
        self.restart_at: float | None = None
        self.stop_requested = False
        self.fast = False
        self.finished = False
        self._hung_reason: str | None = None

    # -- requests from commands --------------------------------------------------------------------

    def request_stop(self, *, fast: bool = False, now: float) -> None:
        """Stop at the next boundary; ``fast`` also terminates the running agent's group now."""
        self.stop_requested = True
        self.restart_at = None
        if fast:
            self.fast = True
            if self.agent is not None:
                self.agent.begin_terminate(self.settings.stop_grace_s, now)

    def agent_seen(self, stage: str, pid: int | None, parked: bool | None, now: float, *, done: bool = False) -> None:
        """An agent message arrived: it is alive; ``parked`` updates its pause state; ``done`` is its last."""
        agent = self.agent
        if agent is None or agent.stage != stage or (pid is not None and pid != agent.pid):
            return
        agent.last_seen = now
        agent.heard = True
        if done:
            agent.done_seen = True
            return
        if parked is not None and parked != agent.parked:
            agent.parked = parked
            self.host.agents_changed({agent.stage: agent})

    def hold(self, now: float) -> None:
        """The supervisor cannot take the agent's messages for now (a full disk): keep it from being
        judged silent meanwhile. The driver is not ticked while held."""
        if self.agent is not None:
            self.agent.last_seen = now

    @property
    def parked(self) -> bool:
        """True when nothing is running, or the running agent has parked."""
        return self.agent is None or self.agent.parked

    # -- the tick ----------------------------------------------------------------------------------

    def tick(self, now: float) -> None:
        """Advance the run as far as it can go without blocking."""
        if self.finished:
            return
        if self.agent is not None:
            self._watch(self.agent, now)
            if self.agent is not None or self.finished:
                return
        if self.stop_requested:
            self._finish("stopped", "pipeline stopped" + (" (fast shutdown)" if self.fast else " at a stage boundary"))
            return
        if self.host.state.pause_requested:
            return
        if self.restart_at is not None:
            if now < self.restart_at:
                return
            self.restart_at = None
            self._launch(now)
            return
        self._advance(now)

    def _advance(self, now: float) -> None:
        if not self.pending:
            self._end_round_if_due(self.settings.rounds)
            self._finish("completed", f"pipeline complete: {self.settings.rounds} round(s)")
            return
        round_no, stage = self.pending[0]
        for previous in range(1, round_no):
            self._end_round_if_due(previous)
        if round_no not in self._round_started:
            self._round_started.add(round_no)
            self.host.emit("round_start", "stage_start", round_no=round_no,
                           message=f"round {round_no}/{self.settings.rounds} started")
        self.attempt = self.crashes = self.nospace = 0
        self.host.emit(stage, "stage_start", round_no=round_no, message=f"{stage} started")
        self._launch(now)

    def _end_round_if_due(self, round_no: int) -> None:
        if round_no in self._round_ended or any(r == round_no for r, _ in self.pending):
            return
        self._round_ended.add(round_no)
        self.host.emit("round_end", "stage_end", round_no=round_no, level="success",
                       message=f"round {round_no}/{self.settings.rounds} complete")

    def _launch(self, now: float) -> None:
        round_no, stage = self.pending[0]
        log_path = self.run_dir / "logs" / f"{stage}_round_{round_no}.log"
        log_path.parent.mkdir(mode=DIR_MODE, exist_ok=True)
        try:
            self.agent = self._spawn(
                stage,
                self._argv_for(stage),
                env=self._env_for(stage, round_no, self.attempt),
                cwd=str(self.run_dir),
                log_path=str(log_path),
                attempt=self.attempt,
                now=now,
            )
        except OSError as exc:
            self._fail(stage, round_no, f"cannot start the {stage} agent: {exc}")
            return
        self._hung_reason = None
        self.host.agents_changed({stage: self.agent})

    def _watch(self, agent: AgentProcess, now: float) -> None:
        code = agent.poll()
        if code is None:
            silent = now - agent.last_seen
            if agent.kill_deadline is None and not agent.parked and silent > self.settings.heartbeat_timeout_s:
                self._hung_reason = f"silent for {silent:.0f} s"
                agent.begin_terminate(self.settings.stop_grace_s, now)
            agent.escalate(now)
            return
        if agent.exited_at is None:
            agent.exited_at = now
        draining = agent.heard and not agent.done_seen and agent.kill_deadline is None and code >= 0
        if draining and now - agent.exited_at < DRAIN_S:
            # Its events may still be on their way: a stage is over only once its final report is in.
            return
        round_no, stage = self.pending[0]
        # Its publishers said at close how many messages they sent: what never arrived is counted.
        lost = self.host.undelivered(f"{stage}:{agent.pid}")
        if draining and code == 0:
            missing = f"{lost} of its messages did not arrive" if lost else "some of its events may be missing"
            self.host.emit(stage, "progress", round_no=round_no, level="warn",
                           message=f"{stage} agent exited without its final report; {missing} "
                                   f"(see logs/{stage}_round_{round_no}.log)")
        elif lost:
            self.host.emit(stage, "progress", round_no=round_no, level="warn",
                           message=f"{stage} agent: {lost} of its messages did not arrive; their events are missing "
                                   f"(see logs/{stage}_round_{round_no}.log)")
        self.agent = None
        self.host.agents_changed({})
        self._exited(agent, code, now)

    def _exited(self, agent: AgentProcess, code: int, now: float) -> None:
        round_no, stage = self.pending[0]
        if code == 0:
            self.pending.pop(0)
            self.host.report_problem(stage, None)
            self.host.emit(stage, "stage_end", round_no=round_no, level="success", message=f"{stage} complete")
            self.host.stage_completed(stage, round_no)
            return
        if self.stop_requested and (code == EXIT_STOPPED or agent.kill_deadline is not None):
            self.host.emit(stage, "progress", round_no=round_no, level="warn",
                           message=f"{stage} stopped before completion ({describe_exit(code)}); autotrain-menu --resume-run continues it")
            return
        if code == EXIT_NOSPACE:
            # Not the agent's fault: it is started again (and resumes) until the disk has room.
            self.attempt += 1
            self.nospace += 1
            delay = min(NOSPACE_RETRY_S, backoff_s(self.nospace))
            self.restart_at = now + delay
            reason = f"{stage}: no space left on device; trying again in {delay:g} s"
            self.host.report_problem(stage, reason)
            self.host.emit(stage, "progress", round_no=round_no, level="warn", message=reason)
            return
        how = self._hung_reason or describe_exit(code)
        if code == EXIT_FATAL:
            said = last_log_line(agent.log_path)
            self._fail(stage, round_no, f"{stage} agent failed permanently ({how})" + (f": {said}" if said else "")
                       + f"; see logs/{stage}_round_{round_no}.log")
            return
        self.crashes += 1
        if self.crashes > self.settings.max_restarts:
            tries = self.crashes
            self._fail(stage, round_no, f"{stage} agent failed {tries} time(s); last: {how}")
            return
        self.attempt += 1
        delay = backoff_s(self.crashes)
        self.restart_at = now + delay
        self.host.emit(stage, "error", round_no=round_no, level="warn",
                       message=f"{stage} agent crashed ({how}); restart {self.crashes}/{self.settings.max_restarts} in {delay:g} s")

    def _fail(self, stage: str, round_no: int, reason: str) -> None:
        self.host.emit(stage, "error", round_no=round_no, level="error", message=reason, error=reason)
        self._finish("failed", f"pipeline failed: {reason}", error=reason)

    def _finish(self, status: str, message: str, *, error: str | None = None) -> None:
        self.finished = True
        self.host.finish_run(status, message, error=error)
