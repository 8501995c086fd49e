"""The command facade: what control commands ask of the supervisor.

It is the :class:`~heidi_engine.supervisor.commands.SupervisorPort` that command handlers see: the answers
(status, snapshot, the list of runs) and the requests (start, resume a run, stop, pause, resume,
shutdown). A new or resumed run is built by the :class:`~heidi_engine.supervisor.run_builder.RunBuilder`
before it replaces the current one. SIGTERM and SIGINT are requests too (:meth:`CommandFacade.on_signal`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from heidi_engine.bus.codec import DecodeError
from heidi_engine.bus.connection import BusInfo
from heidi_engine.bus.isolation import sandbox_warning
from heidi_engine.bus.message import Reply
from heidi_engine.bus.outage import health_reason
from heidi_engine.bus.redaction import clean
from heidi_engine.bus.server import BusServer
from heidi_engine.bus.state import RunState
from heidi_engine.bus.summary import folder_summary
from heidi_engine.supervisor.commands import Refused, execute, refusal
from heidi_engine.supervisor.current_run import CurrentRun
from heidi_engine.supervisor.http_child import HttpChild
from heidi_engine.supervisor.ingress import IngressGate
from heidi_engine.supervisor.run_builder import RunBuilder
from heidi_engine.supervisor.runs import ledger_bytes, run_dirs, runs_root
from heidi_engine.supervisor.ui_feed import read_page

__all__ = ["COMMANDS_PER_TICK", "CommandFacade", "pause_hint"]

COMMANDS_PER_TICK = 64  # a flood of commands cannot starve ingress, the driver or the heartbeat

# Where each stage's agent parks (its checkpoint calls); the words follow "pausing after".
_BOUNDARIES = {
    "generate": "the current teacher batch",
    "validate": "the current sample's tests",
    "train": "the current training step",
    "eval": "the current eval batch",
}
_PACE_EVENTS = 5  # the stage's latest progress events whose spacing estimates its next boundary


def _when(ts: object) -> datetime | None:
    try:
        return datetime.fromisoformat(str(ts).replace("Z", "+00:00"))
    except ValueError:
        return None


def _seconds_left(state: RunState, now: datetime) -> float | None:
    """How long until the running stage's next boundary, as far as the state tells: a training step's
    time from the trainer's own ETA; otherwise the mean spacing of the stage's latest progress events
    (each sent at a batch's end) less the time since the last one."""
    stage, round_no, trainer = state.current_stage, state.current_round, state.trainer
    if stage == "train":
        left = trainer.total - trainer.step
        if trainer.round == round_no and left > 0 and trainer.eta_s is not None:
            return trainer.eta_s / left
        return None
    times = [_when(record.get("ts")) for record in state.recent_events
             if record.get("stage") == stage and record.get("round") == round_no
             and record.get("event_type") == "progress"][-_PACE_EVENTS:]  # fmt: skip
    known = [t for t in times if t is not None]
    if len(known) < 2:
        return None
    spacing = (known[-1] - known[0]).total_seconds() / (len(known) - 1)
    return max(0.0, spacing - (now - known[-1]).total_seconds())


def pause_hint(state: RunState, now: datetime) -> str:
    """What a pause requested at ``now`` waits for: ``pausing after the current teacher batch, ~40 s``."""
    boundary = _BOUNDARIES.get(str(state.current_stage))
    if boundary is None:
        return "pausing before the next stage starts"
    left = _seconds_left(state, now)
    return f"pausing after {boundary}" + ("" if left is None else f", ~{max(1, round(left))} s")


class CommandFacade(CurrentRun):
    """Answers and carries out the control commands for the daemon of ``home``, whose bus is ``info``."""

    def __init__(
        self,
        home: Path,
        info: BusInfo,
        *,
        config_path: Path | None,
        env: dict[str, str],
        clock: Callable[[], float],
    ) -> None:
        self.home = home
        self.info = info
        self.session = info.session
        self.config_path = config_path
        self.env = env
        self.started = clock()
        super().__init__(BusServer(info), clock)
        self.gate = IngressGate()  # what agents may send; the rest refused and counted
        self.shutdown_requested = False
        self.fast_shutdown = False
        self.http_child: HttpChild | None = None
        self.builder = RunBuilder(home, config_path=config_path, env=env, host=self)

    def _serve_commands(self) -> None:
        for _ in range(COMMANDS_PER_TICK):
            received = self.server.recv_command()
            if received is None:
                return
            caller, command = received
            why = refusal(caller.client, command)
            if why is None and caller.client is not None and command.name == "resume_run" and not caller.client.at_least("admin"):
                unlike = self.builder.settings_unlike_the_servers(command.args.get("run_id"))
                if unlike:
                    why = (f"resuming that run is not allowed for client {caller.client.name} (role {caller.client.role}): "
                           f"it was started with {', '.join(unlike[:8])} unlike the server's configuration now; "
                           "an admin or a local user may resume it")
            if why is not None:
                why = clean(why, 2000)
                self.server.bad.refuse("control", DecodeError("not_allowed", f"{command.name}: {why}"))
                self.server.reply(caller, Reply(id=command.id, ok=False, error=why))
                continue
            self.server.reply(caller, execute(self, command))

    # -- answers -----------------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """The ``status`` command's answer."""
        state = self.state
        reason, outage = health_reason(self.problems.text, state.teacher_outage), state.teacher_outage
        return {
            "run_id": state.run_id, "status": state.status, "current_round": state.current_round,
            "total_rounds": state.total_rounds, "current_stage": state.current_stage,
            "stop_requested": state.stop_requested, "pause_requested": state.pause_requested,
            # What a requested pause waits for, while it has not landed (None otherwise).
            "pause_hint": pause_hint(state, datetime.now(timezone.utc))
            if state.pause_requested and state.status != "paused" else None,
            "counters": state.counters, "usage": state.usage, "gpu_summary": state.gpu_summary(),
            "last_event_ts": state.last_event_ts, "updated_at": state.updated_at, "error": state.error,
            "seq": self.seq, "session": self.session, "pid": os.getpid(),
            "uptime_s": round(self.clock() - self.started, 1), "accepted_events": self.accepted_events,
            "bad_messages": dict(self.server.bad.counts), "refused_events": dict(self.gate.refused),
            "health": "degraded" if reason else "ok", "problem": self.problems.text, "health_reason": reason,
            # The generate stage parked on an unreachable teacher: since when, the next probe, the last error.
            "teacher_outage": None if outage is None else outage.model_dump(exclude={"state"}),
            "ledger_bytes": ledger_bytes(self.home, state.run_id),
            "http": None if self.http_child is None else self.http_child.describe(),
            "sandbox_warning": sandbox_warning(state.config),
            # Training scripts reporting beside the run, as themselves (never in "counters").
            "external": {source: {"round": g.round, "step": g.step, "total": g.total, "loss": g.loss}
                         for source, g in state.external.items()},
        }

    def snapshot(self) -> dict[str, Any]:
        """The full state, the ``seq`` it reflects and the UI feed's last delta (the feed is flushed first,
        so the state is exactly what its deltas have described and the next delta follows it)."""
        self.ui_feed.flush(self.clock(), self.state, self.seq)
        return {"seq": self.seq, "session": self.session, "state": self.state.model_dump(mode="json"),
                "feed": self.ui_feed.counter}

    def events_page(self, run_id: str | None, before: int, limit: int) -> dict[str, Any]:
        """The ``events`` command's answer: a page of the shown run's events, read from its files."""
        shown = self.state.run_id
        if shown is None:
            raise Refused("events: no run is shown now")
        if run_id is not None and run_id != shown:
            raise Refused(f"events: {run_id} is not the run shown now ({shown}); its events are in its files")
        folder = self.spool.persister.run_dir if self.spool is not None else runs_root(self.home) / shown
        try:
            page = read_page(folder, self.state.event_count, before, limit)
        except ValueError as exc:
            raise Refused(f"events: {exc}") from None
        return {"run_id": shown, **page}

    def list_runs(self) -> list[dict[str, Any]]:
        """Every run of this home, newest first."""
        return [folder_summary(folder) for folder in run_dirs(self.home)]

    # -- new and resumed runs ----------------------------------------------------------------------

    def start_run(self, overrides: Mapping[str, object]) -> str:
        """Validate the configuration, build the run (folder, files, driver), then make it current.

        Nothing is published and the current state is untouched until everything is built; a run that
        cannot be built is marked failed in its own folder, with the reason, and the start is refused.
        """
        run = self.builder.new_run(overrides)
        state, config = run.state, run.config
        self._switch_to(run)
        self.set_status(reset=True, **state.model_dump(include={"run_id", "status", "total_rounds", "config",
                                                                 "started_at", "problem"}))
        self.emit("round_start", "pipeline_start", round_no=0,
                  message=f"pipeline started: {config.ROUNDS} round(s) of {config.SAMPLES_PER_ROUND} samples")
        unconfined = sandbox_warning(state.config)
        if unconfined:
            self.emit("round_start", "progress", round_no=0, level="warn", message=unconfined)
        return run.run_dir.name

    def resume_run(self, run_id: str | None) -> str:
        """Continue a stopped, interrupted or failed run from its last completed stage.

        Its totals come from the run's ledger plus the events written after it, never from the whole log:
        the answer comes at once whatever the run's length.
        """
        run = self.builder.resumed_run(run_id)
        self._switch_to(run)
        self.set_status(reset=True, run_id=run.run_dir.name, status="running", stop_requested=False,
                        pause_requested=False, error=None, total_rounds=run.config.ROUNDS, agents={},
                        problem=self.problems.text)
        self.emit("round_start", "pipeline_start", round_no=self.state.current_round,
                  message=f"pipeline resumed ({len(run.done)} stage(s) already complete)")
        return run.run_dir.name

    # -- requests ----------------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Graceful stop: no new stage; the agent finishes at its next boundary."""
        if self.pipeline is None:
            # Nothing runs that could finish at a boundary: the run is stopped now.
            self.finish_run("stopped", "pipeline stopped (no stage was running)")
            return
        self.set_status(stop_requested=True, status="stopping")
        self.broadcast("stop")
        self.pipeline.request_stop(now=self.clock())

    def request_pause(self) -> None:
        """Ask agents to park; the status turns ``paused`` once they have."""
        self.set_status(pause_requested=True)
        self.broadcast("pause")
        self._maybe_paused()
        if self.state.status != "paused":  # the park may take a while: say what it waits for
            hint = pause_hint(self.state, datetime.now(timezone.utc))
            self.emit(self.state.current_stage or "round_start", "progress", round_no=self.state.current_round,
                      message=f"pause requested: {hint}")

    def request_resume(self) -> None:
        """Continue a paused run."""
        was_paused = self.state.status == "paused"
        self.set_status(pause_requested=False, status="running" if was_paused else self.state.status)
        self.broadcast("resume")
        if was_paused:
            self.emit(self.state.current_stage or "round_start", "progress", round_no=self.state.current_round,
                      message="resumed")

    def request_shutdown(self) -> None:
        """Leave the loop after a fast stop of the run (agents terminated as groups)."""
        self.shutdown_requested = True
        self.fast_shutdown = True
        if self.pipeline is not None and not self.pipeline.finished:
            if not self.state.stop_requested:
                self.set_status(stop_requested=True, status="stopping")
            self.broadcast("stop")
            self.pipeline.request_stop(fast=True, now=self.clock())

    def on_signal(self) -> None:
        """SIGTERM/SIGINT: the first stops the run gracefully, the second shuts down fast."""
        if self.shutdown_requested or self.pipeline is None or self.pipeline.finished:
            self.request_shutdown()
        else:
            self.shutdown_requested = True
            if not self.state.stop_requested:
                self.request_stop()
