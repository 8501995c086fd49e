"""The supervisor: one loop that brokers the bus, persists, answers commands and drives the run.

For every accepted event the order is fixed: validate → redact (the event model does both) → stamp
``seq`` → append to ``events.jsonl`` → fold into the state → publish. A viewer therefore never sees an
event that is not on disk, and the snapshot's ``seq`` always matches the state it carries.
Everything runs on the main thread (one concurrency model): sockets, agents and timers are polled.
Signal handlers only record the signal; the loop acts on it between two steps, so no signal can land in
the middle of a publish, a rotation or a run's start.

A write that fails (a full disk) never takes the daemon down: the problem is shown as the health's
reason in every viewer, events that could not be written wait in memory (ingress is not read meanwhile,
so agents wait too and nothing is lost), and every write is tried again each second until it succeeds.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from heidi_engine.bus.codec import pack_events
from heidi_engine.bus.config import AutoTrainConfig, load_config
from heidi_engine.bus.connection import BusInfo, remove_bus_info, write_bus_info
from heidi_engine.bus.event import Event, fit_raw_text, new_run_id, utc_now_iso
from heidi_engine.bus.isolation import SandboxUnavailable, choose_sandbox, sandbox_warning
from heidi_engine.bus.journal import load_state_file
from heidi_engine.bus.ledger import replay
from heidi_engine.bus.message import AgentStatus, ControlBroadcast, Heartbeat
from heidi_engine.bus.server import BusServer
from heidi_engine.bus.state import (
    AgentInfo,
    EvalSample,
    RunState,
    StatusPatch,
    SystemSample,
    TeacherSample,
    TrainerSample,
    apply_events,
    apply_sample,
    apply_status,
)
from heidi_engine.supervisor.commands import Refused, execute
from heidi_engine.supervisor.health import Problems
from heidi_engine.supervisor.http_child import HttpChild
from heidi_engine.supervisor.ingress import IngressGate
from heidi_engine.supervisor.persister import Persister
from heidi_engine.supervisor.pipeline import DriverSettings, Pipeline
from heidi_engine.supervisor.process import AgentProcess, agent_argv, agent_env, terminate_group
from heidi_engine.supervisor.runs import (
    find_resumable,
    last_resumable,
    mark_failed,
    record_interruption,
    recover_stale_runs,
    run_dirs,
    runs_root,
    summarize,
)
from heidi_engine.supervisor.sampler import Sampler
from heidi_engine.supervisor.spool import Spool, Written, why

log = logging.getLogger(__name__)

HEARTBEAT_S = 1.0
DEFAULT_SAMPLE_S = 2.0
TICK_S = 0.1
INGEST_BATCH = 2000  # events taken from ingress per loop step (whole batches: it may go a batch over)
EGRESS_BATCH = 256  # events per published batch
EGRESS_MAX_BYTES = 1024 * 1024  # and bytes, far below what a viewer accepts
COMMANDS_PER_TICK = 64  # a flood of commands cannot starve ingress, the driver or the heartbeat


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
        self.spool: Spool | None = None  # the current run's files
        self.pipeline: Pipeline | None = None
        self.config: AutoTrainConfig | None = None
        self.accepted_events = 0
        self.gate = IngressGate()  # what agents may send; the rest refused and counted
        self.shutdown_requested = False
        self.fast_shutdown = False
        self.problems = Problems()
        self._signals: list[int] = []
        self._last_heartbeat = float("-inf")
        self._last_sample = float("-inf")
        self.http_child: HttpChild | None = None
        self.on_step: Callable[[RunState], None] | None = None  # after every loop step (systemd's watchdog)
        write_bus_info(home, info)

    # -- publishing --------------------------------------------------------------------------------

    def _next_seq(self) -> int:
        self.seq += 1
        self.state.seq = self.seq
        return self.seq

    def accept_events(self, events: list[Event]) -> None:
        """Persist, apply and publish already-validated events, in that order (after any held back)."""
        if events and self.spool is not None:
            self._applied(self.spool.write_events(events))

    def _applied(self, written: Written) -> None:
        """Fold what is on disk into the state in one pass, then publish it as batches whose ``seq`` run
        on one by one from the last message's."""
        if not written:
            return
        apply_events(self.state, written)
        for start in range(0, len(written), EGRESS_BATCH):
            self._publish_records([record for _event, record in written[start:start + EGRESS_BATCH]])
        self.accepted_events += len(written)

    def _publish_records(self, records: list[dict[str, Any]]) -> None:
        packed = pack_events(records)
        if len(packed) > EGRESS_MAX_BYTES and len(records) > 1:
            # Only events with long artifact lists get here: halves, each under the viewers' limit.
            half = len(records) // 2
            self._publish_records(records[:half])
            self._publish_records(records[half:])
            return
        first = self.seq + 1
        self.seq += len(records)
        self.state.seq = self.seq
        self.server.publish("event", packed, first)

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
            "event_type": event_type, "message": fit_raw_text(message),
            "error": None if error is None else fit_raw_text(error),
        })
        self.accept_events([event])
        if event_type in ("stage_start", "stage_end", "pipeline_start", "pipeline_stop", "pipeline_complete"):
            self._write_state()
            # The foreground log says what the run is doing: one line per run and stage transition.
            log.log(logging.WARNING if level in ("warn", "error") else logging.INFO, "%s · round %d · %s",
                    self.state.run_id, round_no, message or f"{stage} {event_type.replace('_', ' ')}")

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

    def _write_state(self, *, unless_recent: bool = False) -> None:
        if self.spool is not None:
            self.spool.write_state(self.state, unless_recent=unless_recent)

    def report_problem(self, site: str, problem: str | None) -> bool:
        """Set or clear what keeps ``site`` from working; viewers show it as the health's reason.
        Returns whether anything changed."""
        if not self.problems.report(site, problem):
            return False
        patch = StatusPatch.model_validate({"problem": self.problems.text, "updated_at": utc_now_iso()})
        apply_status(self.state, patch)
        self.server.publish("state", patch, self._next_seq())
        if self.spool is not None:
            self.spool.persister.mark_dirty()
        return True

    def _heartbeat(self) -> None:
        body = Heartbeat(seq=self.seq, run_id=self.state.run_id, status=self.state.status,
                         stop_requested=self.state.stop_requested, pause_requested=self.state.pause_requested)
        self.server.publish("state", body, self.seq)

    # -- ingress -----------------------------------------------------------------------------------

    def _ingest(self) -> None:
        batch: list[Event] = []
        taken = 0
        while taken < INGEST_BATCH:
            received = self.server.recv_ingress(64)
            if not received:
                break
            for header, body_bytes in received:
                if header.kind == "event":
                    events = self.server.decode_ingress_events(body_bytes)
                    taken += max(1, len(events))
                    kept = self.gate.events(self.state, events)
                    if kept:
                        batch.extend(kept)
                        self._seen(header.sender, None)
                    continue
                taken += 1
                body = self.server.decode_ingress_body(header, body_bytes)
                if body is None:
                    continue
                # Keep order: events before a sample or status are persisted and published first.
                self.accept_events(batch)
                batch = []
                if isinstance(body, SystemSample):
                    self.gate.refuse("system_sample")  # only the supervisor samples the machine
                elif isinstance(body, (TrainerSample, EvalSample, TeacherSample)):
                    if not self.gate.foreign(self.state, body.run_id or ""):
                        self._seen(header.sender, None)
                        self.accept_sample(body)
                elif isinstance(body, AgentStatus) and (
                    body.run_id is None or not self.gate.foreign(self.state, body.run_id)
                ):
                    self._seen(body.stage, body.phase == "parked", pid=body.pid, done=body.phase == "done")
        self.accept_events(batch)

    def _seen(self, sender: str, parked: bool | None, *, pid: int | None = None, done: bool = False) -> None:
        if self.pipeline is not None:
            stage = sender.split(":", 1)[0]
            self.pipeline.agent_seen(stage, pid, None if done else parked, self.clock(), done=done)
            if parked is not None and not done:
                self._maybe_paused()

    def accept_sample(self, sample: TrainerSample | SystemSample | EvalSample | TeacherSample) -> None:
        """Persist (trainer and GPU gauges for plots), apply and publish a sample."""
        if self.spool is not None and not isinstance(sample, TeacherSample):  # state.json keeps those
            self.spool.write_sample(sample)
        apply_sample(self.state, sample)
        self.server.publish("sample", sample, self._next_seq())

    def _serve_commands(self) -> None:
        for _ in range(COMMANDS_PER_TICK):
            received = self.server.recv_command()
            if received is None:
                return
            identity, command = received
            self.server.reply(identity, execute(self, command))

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
            "bad_messages": dict(self.server.bad.counts), "refused_events": dict(self.gate.refused),
            "health": "degraded" if self.problems.text else "ok", "problem": self.problems.text,
            "http": None if self.http_child is None else self.http_child.describe(),
            "sandbox_warning": sandbox_warning(state.config),
        }

    def snapshot(self) -> dict[str, Any]:
        """The full state and the ``seq`` it reflects."""
        return {"seq": self.seq, "session": self.session, "state": self.state.model_dump(mode="json")}

    def list_runs(self) -> list[dict[str, Any]]:
        """Every run of this home, newest first."""
        return [summarize(folder) for folder in run_dirs(self.home)]

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

    def note_signal(self, signum: int) -> None:
        """The SIGTERM/SIGINT handler: it only records the signal; the loop acts on it."""
        self._signals.append(signum)

    def _act_on_signals(self) -> None:
        while self._signals:
            name = signal.Signals(self._signals.pop(0)).name
            again = self.shutdown_requested
            active = self.pipeline is not None and not self.pipeline.finished
            self.on_signal()
            if active and not again:
                log.info("received %s: stopping the run at the next stage boundary (Ctrl-C again to stop now)", name)
            elif active:
                log.info("received %s again: stopping now (the agents are terminated)", name)
            else:
                log.info("received %s: shutting down", name)

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
        config = load_config(path, env=self.env, overrides=overrides)
        if config.RUN_UNIT_TESTS == "1":
            try:  # never run generated code unconfined in silence: refuse the run before it starts
                choose_sandbox(config.SANDBOX)
            except SandboxUnavailable as exc:
                raise Refused(str(exc)) from None
        return config

    def _new_pipeline(self, run_dir: Path, config: AutoTrainConfig, done: set[tuple[int, str]], *, resume: bool) -> Pipeline:
        settings = DriverSettings(
            rounds=config.ROUNDS, max_restarts=config.AGENT_MAX_RESTARTS,
            heartbeat_timeout_s=config.AGENT_HEARTBEAT_TIMEOUT_S, stop_grace_s=config.STOP_GRACE_S,
        )
        def env_for(stage: str, round_no: int, attempt: int) -> dict[str, str]:
            return agent_env(self.env, home=self.home, run_dir=run_dir, stage=stage, round_no=round_no,
                             attempt=attempt, resume=resume, config=config.model_dump(mode="json"))
        return Pipeline(self, settings, run_dir=run_dir, argv_for=lambda stage: agent_argv(self.env, stage),
                        env_for=env_for, completed=done)

    def _switch_to(self, state: RunState, config: AutoTrainConfig, persister: Persister, pipeline: Pipeline) -> None:
        """Make a fully built run the current one (nothing here can fail half-way)."""
        self._close_run()
        state.seq, state.problem = self.seq, self.problems.text
        self.state, self.config, self.pipeline = state, config, pipeline
        self.spool = Spool(persister, self.report_problem, self.clock)

    def _close_run(self) -> None:
        spool, self.spool = self.spool, None
        if spool is not None:
            spool.close(self.state)

    def start_run(self, overrides: Mapping[str, object]) -> str:
        """Validate the configuration, build the run (folder, files, driver), then make it current.

        Nothing is published and the current state is untouched until everything is built; a run that
        cannot be built is marked failed in its own folder, with the reason, and the start is refused.
        """
        config = self._load_config(overrides)
        run_id = new_run_id()
        run_dir = runs_root(self.home) / run_id
        state = RunState(run_id=run_id, status="starting", total_rounds=config.ROUNDS,
                         config=config.redacted_dict(), started_at=utc_now_iso())
        try:
            persister = Persister.sized(run_dir, config.EVENT_LOG_MAX_SIZE_MB, config.EVENT_LOG_RETENTION)
            try:
                persister.write_config(config.redacted_dict())
            except OSError:
                persister.close()
                raise
        except OSError as exc:
            reason = f"cannot start run {run_id}: {why(exc)} ({getattr(exc, 'filename', None) or run_dir})"
            mark_failed(run_dir, state, reason)
            self.report_problem("start", reason)
            raise Refused(reason) from None
        self.report_problem("start", None)
        pipeline = self._new_pipeline(run_dir, config, set(), resume=False)
        self._switch_to(state, config, persister, pipeline)
        self.set_status(reset=True, **state.model_dump(include={"run_id", "status", "total_rounds", "config",
                                                                 "started_at", "problem"}))
        self.emit("round_start", "pipeline_start", round_no=0,
                  message=f"pipeline started: {config.ROUNDS} round(s) of {config.SAMPLES_PER_ROUND} samples")
        unconfined = sandbox_warning(state.config)
        if unconfined:
            self.emit("round_start", "progress", round_no=0, level="warn", message=unconfined)
        return run_id

    def resume_run(self, run_id: str | None) -> str:
        """Continue a stopped, interrupted or failed run from its last completed stage.

        Its totals come from the run's ledger plus the events written after it, never from the whole log:
        the answer comes at once whatever the run's length.
        """
        try:
            run_dir = find_resumable(self.home, run_id)
        except LookupError as exc:
            raise Refused(str(exc)) from None
        saved = load_state_file(run_dir) or RunState()
        # The run keeps its own settings; redacted values (credentials) come again from config.yaml/env.
        overrides = {k: "" if v is None else str(v) for k, v in saved.config.items()
                     if not (isinstance(v, str) and "[REDACTED" in v)}
        config = self._load_config(overrides)
        try:
            persister = Persister.sized(run_dir, config.EVENT_LOG_MAX_SIZE_MB, config.EVENT_LOG_RETENTION)
        except OSError as exc:
            raise Refused(f"cannot resume {run_dir.name}: {why(exc)}") from None
        state = replay(run_dir, persister.ledger)
        done = persister.ledger.done()
        pipeline = self._new_pipeline(run_dir, config, done, resume=True)
        self._switch_to(state, config, persister, pipeline)
        self.set_status(reset=True, run_id=run_dir.name, status="running", stop_requested=False,
                        pause_requested=False, error=None, total_rounds=config.ROUNDS, agents={},
                        problem=self.problems.text)
        self.emit("round_start", "pipeline_start", round_no=self.state.current_round,
                  message=f"pipeline resumed ({len(done)} stage(s) already complete)")
        return run_dir.name

    def stage_completed(self, stage: str, round_no: int) -> None:
        """After a stage's success: carry what it recorded for viewers (the best adapter so far)."""
        if stage != "eval" or self.spool is None:
            return
        try:
            best = json.loads((self.spool.persister.run_dir / "best_adapter.json").read_text())
            adapter = str(best["adapter_dir"])
        except (OSError, ValueError, KeyError, TypeError):
            return
        if adapter != self.state.best_adapter:
            self.set_status(best_adapter=adapter)

    def undelivered(self, sender: str) -> int:
        """Messages of an agent (``stage:pid``) known never to have arrived (see bus/delivery)."""
        return self.server.receipts.undelivered(sender)

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
        """Mark runs left active by a dead supervisor ``interrupted`` (their stale agents killed), record
        that in each one's event log, and show the newest resumable run until another starts."""
        recovered = recover_stale_runs(self.home)
        for name in recovered:
            record_interruption(runs_root(self.home) / name, os.getpid())
        last = last_resumable(self.home)
        if last is not None:
            # What the previous supervisor knew of its own HTTP server is not this one's.
            last.seq, last.agents, last.http_error = self.seq, {}, None
        self.state = last or RunState(seq=self.seq)
        return recovered

    # -- the loop ----------------------------------------------------------------------------------

    def serve_forever(self) -> None:
        """Run until shutdown; always leaves no agent, socket or connection file behind.

        A bug in one step is logged and shown as the health's reason; it does not take the daemon (and
        with it every viewer's and agent's connection) down.
        """
        try:
            while not (self.shutdown_requested and self.pipeline is None):
                try:
                    self._step()
                except Exception as exc:
                    if self.report_problem("supervisor", f"internal error: {type(exc).__name__}: {exc}"):
                        log.exception("internal error in the supervisor's loop")
                    time.sleep(TICK_S)  # never a hot loop on a repeating error
                else:
                    self.report_problem("supervisor", None)
        finally:
            self.close()

    def _step(self) -> None:
        self._act_on_signals()
        now = self.clock()
        held = self.spool is not None and self.spool.held
        self.server.reading = not held
        ready = self.server.wait(min(TICK_S, max(0.0, self._last_heartbeat + HEARTBEAT_S - now)), ingress=not held)
        if ready.ingress:
            self._ingest()
        if ready.control:
            self._serve_commands()
        now = self.clock()
        if self.spool is not None:
            self._applied(self.spool.retry(now))
        pipeline = self.pipeline
        if pipeline is not None:
            if self.spool is not None and self.spool.held and not self.fast_shutdown:
                pipeline.hold(now)  # its agent's messages wait in the socket, not on a judge
            else:
                pipeline.tick(now)
                if pipeline.finished:
                    self.pipeline = None
        self._write_state(unless_recent=True)
        if now - self._last_heartbeat >= HEARTBEAT_S:
            self._last_heartbeat = now
            self._heartbeat()
        self._sample(now)
        self._watch_http()
        if self.on_step is not None:
            self.on_step(self.state)

    def _sample(self, now: float) -> None:
        if self.sampler is None:
            return
        interval = self.config.GPU_SAMPLE_INTERVAL_S if self.config is not None else DEFAULT_SAMPLE_S
        if now - self._last_sample >= interval:
            self._last_sample = now
            self.accept_sample(self.sampler.sample())

    def start_http(self, port: int) -> None:
        """Run the HTTP status server (a bus client like any viewer) as a supervised child of the daemon."""
        self.http_child = HttpChild(self.home, port, env=self.env, clock=self.clock)
        self.http_child.start()

    def _watch_http(self) -> None:
        # A new or resumed run replaces the state: the server's health is carried into it here too.
        if self.http_child is not None:
            self.http_child.tick()
            if self.state.http_error != self.http_child.error:
                self.set_status(http_error=self.http_child.error)

    def close(self) -> None:
        """Terminate any agent, write the last state, close sockets, remove the connection file.

        Each step is tried whatever happened to the ones before it.
        """
        grace = self.config.STOP_GRACE_S if self.config else 5.0
        pipeline, http_child, sampler = self.pipeline, self.http_child, self.sampler
        self.http_child = None
        steps: list[tuple[str, Callable[[], object]]] = []
        if pipeline is not None and pipeline.agent is not None:
            steps.append(("stop the agent", lambda: terminate_group(pipeline.agent, grace)))  # type: ignore[arg-type]
        if http_child is not None:
            steps.append(("stop the HTTP server", http_child.close))
        steps.append(("close the run", self._close_run))
        if sampler is not None:
            steps.append(("close the sampler", sampler.close))
        steps.append(("close the sockets", self.server.close))
        steps.append(("remove the connection file", lambda: remove_bus_info(self.home, self.info)))
        for what, step in steps:
            try:
                step()
            except Exception:
                log.exception("shutdown: cannot %s", what)
        if pipeline is not None:
            pipeline.agent = None
