"""The current run as disk and viewers see it, and the one path by which it changes.

For every accepted event the order is fixed: validate → redact (the event model does both) → stamp
``seq`` → append to ``events.jsonl`` → fold into the state → publish. A viewer therefore never sees an
event that is not on disk, and the snapshot's ``seq`` always matches the state it carries.

A write that fails (a full disk) is shown as the health's reason (see :mod:`heidi_engine.supervisor.spool`):
events that could not be written wait in memory and are tried again each second until they are written.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

from heidi_engine.bus.config import AutoTrainConfig
from heidi_engine.bus.event import Event, fit_raw_text, utc_now_iso
from heidi_engine.bus.event_wire import pack_records
from heidi_engine.bus.message import ControlBroadcast, Heartbeat
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
from heidi_engine.supervisor.health import Problems
from heidi_engine.supervisor.pipeline import Pipeline
from heidi_engine.supervisor.process import AgentProcess
from heidi_engine.supervisor.run_builder import BuiltRun
from heidi_engine.supervisor.spool import Spool, Written
from heidi_engine.supervisor.ui_feed import UiFeed

__all__ = ["EGRESS_BATCH", "EGRESS_MAX_BYTES", "CurrentRun"]

# The daemon's log lines keep the one name they have always had, whichever module writes them.
log = logging.getLogger("heidi_engine.supervisor.broker")

EGRESS_BATCH = 256  # events per published batch
EGRESS_MAX_BYTES = 1024 * 1024  # and bytes, far below what a viewer accepts


class CurrentRun:
    """The current run's state, files and driver, and the publishing of every change to them; the host
    that the run's driver reports to (:class:`~heidi_engine.supervisor.pipeline.RunHost`)."""

    def __init__(self, server: BusServer, clock: Callable[[], float]) -> None:
        self.server = server
        self.clock = clock
        self.state = RunState()
        self.seq = 0
        self.spool: Spool | None = None  # the current run's files
        self.pipeline: Pipeline | None = None
        self.config: AutoTrainConfig | None = None
        self.accepted_events = 0
        self.problems = Problems()
        self.ui_feed = UiFeed(server)  # what UI clients follow: a delta at most every 100 ms

    # -- publishing --------------------------------------------------------------------------------

    def _next_seq(self) -> int:
        self.seq += 1
        self.state.seq = self.seq
        return self.seq

    def accept_events(self, events: list[Event], records: list[dict[str, Any]] | None = None) -> None:
        """Persist, apply and publish already-validated events (with their records when the caller has
        them), in that order (after any held back)."""
        if events and self.spool is not None:
            self._applied(self.spool.write_events(events, records))

    def _applied(self, written: Written) -> None:
        """Fold what is on disk into the state in one pass, then publish it as batches whose ``seq`` run
        on one by one from the last message's."""
        if not written:
            return
        apply_events(self.state, written)
        self.ui_feed.accept(written)
        for start in range(0, len(written), EGRESS_BATCH):
            self._publish_records([record for _event, record in written[start:start + EGRESS_BATCH]])
        self.accepted_events += len(written)

    def _publish_records(self, records: list[dict[str, Any]]) -> None:
        packed = pack_records(records)
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
        """Hand ``state.json`` and the ledger to the persister's writer: at once at a boundary, else once a
        second; the loop never waits for the disk, and learns a failure at a later check."""
        if self.spool is not None:
            if not unless_recent:
                self.spool.persister.mark_boundary()
            self.spool.write_state(self.state, unless_recent=True)

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

    def accept_sample(self, sample: TrainerSample | SystemSample | EvalSample | TeacherSample) -> None:
        """Persist (trainer and GPU gauges for plots), apply and publish a sample."""
        if self.spool is not None and not isinstance(sample, TeacherSample):  # state.json keeps those
            self.spool.write_sample(sample)
        apply_sample(self.state, sample)
        self.server.publish("sample", sample, self._next_seq())

    # -- the driver's host -------------------------------------------------------------------------

    def agent_heard(self, sender: str, parked: bool | None, *, pid: int | None = None, done: bool = False) -> None:
        """A message of an agent arrived (``sender`` is ``stage:pid``): it is alive; ``parked`` is its pause
        state when the message says it, ``done`` whether it is its last."""
        if self.pipeline is not None:
            stage = sender.split(":", 1)[0]
            self.pipeline.agent_seen(stage, pid, None if done else parked, self.clock(), done=done)
            if parked is not None and not done:
                self._maybe_paused()

    def _maybe_paused(self) -> None:
        pipeline = self.pipeline
        if self.state.pause_requested and self.state.status == "running" and pipeline is not None and pipeline.parked:
            self.set_status(status="paused")
            self.emit(self.state.current_stage or "round_start", "progress", round_no=self.state.current_round,
                      message="paused at a safe boundary")

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

    # -- switching runs ----------------------------------------------------------------------------

    def _switch_to(self, run: BuiltRun) -> None:
        """Make a fully built run the current one (nothing here can fail half-way)."""
        self._close_run()
        state = run.state
        state.seq, state.problem = self.seq, self.problems.text
        self.state, self.config, self.pipeline = state, run.config, run.pipeline
        self.spool = Spool(run.persister, self.report_problem, self.clock)

    def _close_run(self) -> None:
        spool, self.spool = self.spool, None
        if spool is not None:
            spool.close(self.state)
