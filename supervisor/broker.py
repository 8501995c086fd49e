"""The supervisor: one loop that brokers the bus, persists, answers commands and drives the run.

For every accepted event the order is fixed: validate → redact (the event model does both) → stamp
``seq`` → append to ``events.jsonl`` → fold into the state → publish. A viewer therefore never sees an
event that is not on disk, and the snapshot's ``seq`` always matches the state it carries.
Everything runs on the main thread (one concurrency model): sockets, agents and timers are polled.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from heidi_engine.bus.codec import pack_body
from heidi_engine.bus.config import AutoTrainConfig, ConfigError, load_config
from heidi_engine.bus.connection import BusInfo, remove_bus_info, write_bus_info
from heidi_engine.bus.event import Event, new_run_id, utc_now_iso
from heidi_engine.bus.journal import replay
from heidi_engine.bus.message import AgentStatus, Command, ControlBroadcast, Heartbeat, Reply
from heidi_engine.bus.redaction import clean
from heidi_engine.bus.server import BusServer
from heidi_engine.bus.state import (
    ACTIVE_STATUSES,
    GAUGE_TYPES,
    AgentInfo,
    EvalSample,
    RunState,
    StatusPatch,
    SystemSample,
    TrainerSample,
    apply_event,
    apply_sample,
    apply_status,
)
from heidi_engine.supervisor.commands import Refused, dispatch
from heidi_engine.supervisor.persister import Persister
from heidi_engine.supervisor.pipeline import DriverSettings, Pipeline
from heidi_engine.supervisor.process import AgentProcess, agent_argv, agent_env, spawn, terminate_group
from heidi_engine.supervisor.runs import (
    completed_stages,
    find_resumable,
    recover_stale_runs,
    run_dirs,
    runs_root,
    summarize,
)
from heidi_engine.supervisor.sampler import Sampler

log = logging.getLogger(__name__)

HEARTBEAT_S = 1.0
DEFAULT_SAMPLE_S = 2.0
TICK_S = 0.1
INGEST_BATCH = 2000


class Supervisor:
    """The daemon's state and loop; see the module docstring for the order of operations."""

    def __init__(
        self,
        home: Path,
        info: BusInfo,
        *,
        config_path: Path | None,
        env: Mapping[str, str] | None = None,
        sampler: Sampler | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.home = home
        self.info = info
        self.session = info.session
        self.config_path = config_path
        self.env = dict(os.environ if env is None else env)
        self.clock = clock
        self.started = clock()
        self.server = BusServer(info)
        self.sampler = sampler
        self.state = RunState()
        self.seq = 0
        self.persister: Persister | None = None
        self.pipeline: Pipeline | None = None
        self.config: AutoTrainConfig | None = None
        self.accepted_events = 0
        self.refused_events: dict[str, int] = {}
        self.shutdown_requested = False
        self.fast_shutdown = False
        self._last_heartbeat = float("-inf")
        self._last_sample = float("-inf")
        self._last_trainer: tuple[int, int] | None = None
        self.http_child: AgentProcess | None = None
        write_bus_info(home, info)

    # -- publishing --------------------------------------------------------------------------------

    def _next_seq(self) -> int:
        self.seq += 1
        self.state.seq = self.seq
        return self.seq

    def accept_events(self, events: list[Event]) -> None:
        """Persist, apply and publish already-validated events, in that order."""
        if not events or self.persister is None:
            return
        records = [e.to_record() for e in events]
        try:
            self.persister.append_events(records)
        except OSError as exc:
            # Not on disk means not accepted: nothing is published or counted that a restart would lose.
            self.refused_events["disk"] = self.refused_events.get("disk", 0) + len(events)
            log.error("cannot write events.jsonl (%s); %d event(s) refused", exc, len(events))
            return
        for event, record in zip(events, records, strict=True):
            apply_event(self.state, event, record)
            self.server.publish("event", pack_body(record), self._next_seq())
        self.accepted_events += len(events)

    def emit(
        self,
        stage: str,
        event_type: str,
        *,
        round_no: int,
        level: str = "info",
        message: str = "",
        error: str | None = None,
    ) -> None:
        """An event of the supervisor's own (pipeline and stage boundaries, crashes)."""
        if self.state.run_id is None:
            return
        event = Event.model_validate({
            "run_id": self.state.run_id, "round": round_no, "stage": stage, "level": level,
            "event_type": event_type, "message": message, "error": error,
        })
        self.accept_events([event])
        if event_type in ("stage_start", "stage_end", "pipeline_start", "pipeline_stop", "pipeline_complete"):
            self._write_state()

    def set_status(self, **fields: object) -> None:
        """Apply a status change, publish it, and write ``state.json`` (a boundary)."""
        fields.setdefault("updated_at", utc_now_iso())
        patch = StatusPatch.model_validate(fields)
        apply_status(self.state, patch)
        self.server.publish("state", patch, self._next_seq())
        self._write_state()

    def broadcast(self, action: str) -> None:
        """Tell agents to pause, resume or stop."""
        self.server.publish("control", ControlBroadcast(action=action, run_id=self.state.run_id), None)  # type: ignore[arg-type]

    def _write_state(self) -> None:
        if self.persister is not None:
            self.persister.write_state(self.state)

    def _heartbeat(self) -> None:
        body = Heartbeat(seq=self.seq, run_id=self.state.run_id, status=self.state.status,
                         stop_requested=self.state.stop_requested, pause_requested=self.state.pause_requested)
        self.server.publish("state", body, self.seq)

    # -- ingress -----------------------------------------------------------------------------------

    def _ingest(self) -> None:
        batch: list[Event] = []
        for header, body_bytes in self.server.recv_ingress(INGEST_BATCH):
            body = self.server.decode_ingress_body(header, body_bytes)
            if body is None:
                continue
            if isinstance(body, Event):
                if self._refuse_foreign(body.run_id):
                    continue
                self._seen(header.sender, None)
                batch.append(body)
                continue
            # Keep order: events before a sample or status are persisted and published first.
            self.accept_events(batch)
            batch = []
            if isinstance(body, GAUGE_TYPES):
                if self.state.run_id is None:
                    continue
                self._seen(header.sender, None)
                self.accept_sample(body)
            elif isinstance(body, AgentStatus):
                if body.run_id is not None and self._refuse_foreign(body.run_id):
                    continue
                self._seen(body.stage, body.phase == "parked", pid=body.pid, done=body.phase == "done")
        self.accept_events(batch)

    def _refuse_foreign(self, run_id: str) -> bool:
        if self.state.run_id == run_id and self.state.status in ACTIVE_STATUSES:
            return False
        self.refused_events["wrong_run"] = self.refused_events.get("wrong_run", 0) + 1
        return True

    def _seen(self, sender: str, parked: bool | None, *, pid: int | None = None, done: bool = False) -> None:
        if self.pipeline is not None:
            stage = sender.split(":", 1)[0]
            self.pipeline.agent_seen(stage, pid, None if done else parked, self.clock(), done=done)
            if parked is not None and not done:
                self._maybe_paused()

    def accept_sample(self, sample: TrainerSample | SystemSample | EvalSample) -> None:
        """Persist (trainer and GPU gauges for plots), apply and publish a sample."""
        if self.persister is not None:
            if isinstance(sample, TrainerSample):
                key = (sample.round, sample.step)
                if self._last_trainer is not None and key[0] == self._last_trainer[0] and key[1] <= self._last_trainer[1]:
                    # A trainer resumed from a checkpoint: its metric history restarts at that step.
                    self.persister.truncate_metrics_from(sample.round, sample.step)
                self._last_trainer = key
            self.persister.append_metric(sample.model_dump(mode="json"))
            self.persister.mark_dirty()
        apply_sample(self.state, sample)
        self.server.publish("sample", sample, self._next_seq())

    # -- control -----------------------------------------------------------------------------------

    def _serve_commands(self) -> None:
        while True:
            received = self.server.recv_command()
            if received is None:
                return
            identity, command = received
            self.server.reply(identity, self._execute(command))

    def _execute(self, command: Command) -> Reply:
        try:
            result = dispatch(self, command.name, command.args)
        except Refused as exc:
            return Reply(id=command.id, ok=False, error=clean(str(exc), 2000))
        except ConfigError as exc:
            return Reply(id=command.id, ok=False, error=clean(str(exc), 4000))
        except Exception as exc:  # a handler bug must not take the daemon down
            log.exception("command %s failed", command.name)
            return Reply(id=command.id, ok=False, error=clean(f"{command.name} failed: {exc}", 2000))
        return Reply(id=command.id, ok=True, result=result)

    def stats(self) -> dict[str, Any]:
        """The ``status`` command's answer."""
        state = self.state
        return {
            "run_id": state.run_id, "status": state.status, "current_round": state.current_round,
            "total_rounds": state.total_rounds, "current_stage": state.current_stage,
            "stop_requested": state.stop_requested, "pause_requested": state.pause_requested,
            "counters": state.counters, "usage": state.usage, "gpu_summary": state.gpu_summary(),
            "last_event_ts": state.last_event_ts, "updated_at": state.updated_at, "error": state.error,
            "seq": self.seq, "session": self.session, "pid": os.getpid(),
            "uptime_s": round(self.clock() - self.started, 1), "accepted_events": self.accepted_events,
            "bad_messages": dict(self.server.bad.counts), "refused_events": dict(self.refused_events),
        }

    def snapshot(self) -> dict[str, Any]:
        """The full state and the ``seq`` it reflects."""
        return {"seq": self.seq, "session": self.session, "state": self.state.model_dump(mode="json")}

    def list_runs(self) -> list[dict[str, Any]]:
        """Every run of this home, newest first."""
        return [summarize(folder) for folder in run_dirs(self.home)]

    def request_stop(self) -> None:
        """Graceful stop: no new stage; the agent finishes at its next boundary."""
        self.set_status(stop_requested=True, status="stopping")
        self.broadcast("stop")
        if self.pipeline is not None:
            self.pipeline.request_stop(now=self.clock())

    def request_pause(self) -> None:
        """Ask agents to park; the status turns ``paused`` once they have."""
        self.set_status(pause_requested=True)
        self.broadcast("pause")
        self._maybe_paused()

    def _maybe_paused(self) -> None:
        pipeline = self.pipeline
        if self.state.pause_requested and self.state.status == "running" and pipeline is not None and pipeline.parked:
            self.set_status(status="paused")
            self.emit(self.state.current_stage or "round_start", "progress", round_no=self.state.current_round,
                      message="paused at a safe boundary")

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

    # -- runs --------------------------------------------------------------------------------------

    def _load_config(self, overrides: Mapping[str, object]) -> AutoTrainConfig:
        path = self.config_path if self.config_path is not None and self.config_path.exists() else None
        return load_config(path, env=self.env, overrides=overrides)

    def _open_run(self, run_dir: Path, config: AutoTrainConfig) -> None:
        self._close_run()
        self.config = config
        self.persister = Persister(
            run_dir,
            max_bytes=max(1024, int(config.EVENT_LOG_MAX_SIZE_MB * 1024 * 1024)),
            retention=config.EVENT_LOG_RETENTION,
        )
        self._last_trainer = None

    def _close_run(self) -> None:
        if self.persister is not None:
            self.persister.close(self.state)
            self.persister = None

    def start_run(self, overrides: Mapping[str, object]) -> str:
        """Validate the configuration, create the run folder and start the driver."""
        config = self._load_config(overrides)
        run_id = new_run_id()
        run_dir = runs_root(self.home) / run_id
        self.state = RunState(run_id=run_id, status="starting", total_rounds=config.ROUNDS,
                              config=config.redacted_dict(), seq=self.seq, started_at=utc_now_iso())
        self.state.gpus, self.state.gpu_message = [], None
        self._open_run(run_dir, config)
        assert self.persister is not None
        self.persister.write_config(config.redacted_dict())
        self.set_status(reset=True, **self.state.model_dump(include={"run_id", "status", "total_rounds", "config", "started_at"}))
        self.emit("round_start", "pipeline_start", round_no=0,
                  message=f"pipeline started: {config.ROUNDS} round(s) of {config.SAMPLES_PER_ROUND} samples")
        self._start_pipeline(run_dir, config, set(), resume=False)
        return run_id

    def resume_run(self, run_id: str | None) -> str:
        """Continue a stopped, interrupted or failed run from its last completed stage."""
        try:
            run_dir = find_resumable(self.home, run_id)
        except LookupError as exc:
            raise Refused(str(exc)) from None
        saved = replay(run_dir)
        # The run keeps its own settings; redacted values (credentials) come again from config.yaml/env.
        overrides = {k: "" if v is None else str(v) for k, v in saved.config.items()
                     if not (isinstance(v, str) and "[REDACTED" in v)}
        config = self._load_config(overrides)
        # Counters come from the events themselves, so the invariant with events.jsonl holds exactly.
        self.state = saved
        self.state.seq = self.seq
        self._open_run(run_dir, config)
        self.set_status(reset=True, run_id=run_dir.name, status="running", stop_requested=False,
                        pause_requested=False, error=None, total_rounds=config.ROUNDS, agents={})
        done = completed_stages(run_dir)
        self.emit("round_start", "pipeline_start", round_no=self.state.current_round,
                  message=f"pipeline resumed ({len(done)} stage(s) already complete)")
        self._start_pipeline(run_dir, config, done, resume=True)
        return run_dir.name

    def _start_pipeline(self, run_dir: Path, config: AutoTrainConfig, done: set[tuple[int, str]], *, resume: bool) -> None:
        settings = DriverSettings(
            rounds=config.ROUNDS, max_restarts=config.AGENT_MAX_RESTARTS,
            heartbeat_timeout_s=config.AGENT_HEARTBEAT_TIMEOUT_S, stop_grace_s=config.STOP_GRACE_S,
        )
        def env_for(stage: str, round_no: int, attempt: int) -> dict[str, str]:
            return self._agent_env(run_dir, stage, round_no, attempt, resume)
        self.pipeline = Pipeline(self, settings, run_dir=run_dir, argv_for=lambda stage: agent_argv(self.env, stage),
                                 env_for=env_for, completed=done)

    def _agent_env(self, run_dir: Path, stage: str, round_no: int, attempt: int, resume: bool) -> dict[str, str]:
        config = None if self.config is None else self.config.model_dump(mode="json")
        return agent_env(self.env, home=self.home, run_dir=run_dir, stage=stage, round_no=round_no,
                         attempt=attempt, resume=resume, config=config)

    def stage_completed(self, stage: str, round_no: int) -> None:
        """After a stage's success: carry what it recorded for viewers (the best adapter so far)."""
        if stage != "eval" or self.persister is None:
            return
        try:
            best = json.loads((self.persister.run_dir / "best_adapter.json").read_text())
            adapter = str(best["adapter_dir"])
        except (OSError, ValueError, KeyError, TypeError):
            return
        if adapter != self.state.best_adapter:
            self.set_status(best_adapter=adapter)

    def agents_changed(self, agents: Mapping[str, AgentProcess]) -> None:
        """Record running agents (and their groups) in the state, for stale-group cleanup after a crash."""
        infos = {
            stage: AgentInfo(stage=stage, pid=a.pid, pgid=a.pid, phase="parked" if a.parked else "running",
                             restarts=a.attempt)
            for stage, a in agents.items()
        }
        self.set_status(agents=infos)
        self._maybe_paused()

    def finish_run(self, status: str, message: str, *, error: str | None = None) -> None:
        """End the run: the closing event, the final status, a last ``state.json``."""
        kind = "pipeline_complete" if status == "completed" else "pipeline_stop"
        level = "success" if status == "completed" else ("error" if status == "failed" else "warn")
        self.emit("round_end", kind, round_no=self.state.current_round, level=level, message=message,
                  error=error if level == "error" else None)
        self.set_status(status=status, stop_requested=False, pause_requested=False, agents={})
        self._close_run()

    def recover_stale_runs(self) -> list[str]:
        """Mark runs left active by a dead supervisor ``interrupted`` (their stale agents killed)."""
        return recover_stale_runs(self.home)

    # -- the loop ----------------------------------------------------------------------------------

    def serve_forever(self) -> None:
        """Run until shutdown; always leaves no agent, socket or connection file behind."""
        try:
            while True:
                now = self.clock()
                ready = self.server.wait(min(TICK_S, max(0.0, self._last_heartbeat + HEARTBEAT_S - now)))
                if ready.ingress:
                    self._ingest()
                if ready.control:
                    self._serve_commands()
                now = self.clock()
                if self.pipeline is not None:
                    self.pipeline.tick(now)
                    if self.pipeline.finished:
                        self.pipeline = None
                if self.persister is not None:
                    self.persister.maybe_write_state(self.state)
                if now - self._last_heartbeat >= HEARTBEAT_S:
                    self._last_heartbeat = now
                    self._heartbeat()
                self._sample(now)
                if self.shutdown_requested and self.pipeline is None:
                    return
        finally:
            self.close()

    def _sample(self, now: float) -> None:
        if self.sampler is None:
            return
        interval = self.config.GPU_SAMPLE_INTERVAL_S if self.config is not None else DEFAULT_SAMPLE_S
        if now - self._last_sample >= interval:
            self._last_sample = now
            self.accept_sample(self.sampler.sample())

    def start_http(self, port: int) -> None:
        """Run the HTTP status server (a bus client like any viewer) as a child tied to the daemon."""
        argv = [sys.executable, "-m", "heidi_engine.ui.http", "--home", str(self.home), "--port", str(port)]
        self.http_child = spawn("http", argv, env=self.env, cwd=str(self.home), log_path=str(self.home / "http.log"))
        log.info("HTTP status server on http://127.0.0.1:%d (pid %d)", port, self.http_child.pid)

    def close(self) -> None:
        """Terminate any agent, write the last state, close sockets, remove the connection file."""
        grace = self.config.STOP_GRACE_S if self.config else 5.0
        if self.pipeline is not None and self.pipeline.agent is not None:
            terminate_group(self.pipeline.agent, grace)
            self.pipeline.agent = None
        if self.http_child is not None:
            terminate_group(self.http_child, 5.0)
            self.http_child = None
        self._close_run()
        if self.sampler is not None:
            self.sampler.close()
        self.server.close()
        remove_bus_info(self.home, self.info)
