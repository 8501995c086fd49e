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

The parts: :mod:`~heidi_engine.supervisor.current_run` (the run's state and the publishing of every
change; the driver's host), :mod:`~heidi_engine.supervisor.facade` (what commands ask),
:mod:`~heidi_engine.supervisor.run_builder` (a new or resumed run, built before it becomes current),
:mod:`~heidi_engine.supervisor.intake` (ingress) and :mod:`~heidi_engine.supervisor.signals`; this module
holds the loop.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from heidi_engine.bus.connection import BusInfo, remove_bus_info, write_bus_info
from heidi_engine.bus.state import RunState
from heidi_engine.supervisor.current_run import EGRESS_BATCH, EGRESS_MAX_BYTES
from heidi_engine.supervisor.facade import COMMANDS_PER_TICK, CommandFacade
from heidi_engine.supervisor.http_child import HttpChild
from heidi_engine.supervisor.intake import INGEST_BATCH, Intake
from heidi_engine.supervisor.process import terminate_group
from heidi_engine.supervisor.runs import (
    clear_orphan_temps,
    last_resumable,
    record_interruption,
    recover_stale_runs,
    runs_root,
)
from heidi_engine.supervisor.sampler import Sampler
from heidi_engine.supervisor.signals import SignalLatch

__all__ = [
    "COMMANDS_PER_TICK", "DEFAULT_SAMPLE_S", "EGRESS_BATCH", "EGRESS_MAX_BYTES", "HEARTBEAT_S", "INGEST_BATCH",
    "TICK_S", "Supervisor",
]

log = logging.getLogger(__name__)

HEARTBEAT_S = 1.0
DEFAULT_SAMPLE_S = 2.0
TICK_S = 0.1


class Supervisor(CommandFacade):
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
        super().__init__(home, info, config_path=config_path, env=dict(os.environ if env is None else env), clock=clock)
        self.sampler = sampler
        self.intake = Intake(self.server, self.gate, self)
        self.signals = SignalLatch()
        self._last_heartbeat = float("-inf")
        self._last_sample = float("-inf")
        self.on_step: Callable[[RunState], None] | None = None  # after every loop step (systemd's watchdog)
        write_bus_info(home, info)

    def note_signal(self, signum: int) -> None:
        """The SIGTERM/SIGINT handler: it only records the signal; the loop acts on it."""
        self.signals.note(signum)

    def recover_stale_runs(self) -> list[str]:
        """Mark runs left active by a dead supervisor ``interrupted`` (their stale agents killed), remove
        the temp files that killed writes left, record the interruption in each one's event log, and show
        the newest resumable run until another starts."""
        recovered = recover_stale_runs(self.home)
        clear_orphan_temps(self.home)
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
        self.signals.act(self)
        now = self.clock()
        held = self.spool is not None and self.spool.held
        self.server.reading = not held
        ready = self.server.wait(min(TICK_S, max(0.0, self._last_heartbeat + HEARTBEAT_S - now)), ingress=not held)
        self.report_problem("remote", self.server.problem)
        if ready.ingress:
            self.intake.ingest()
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
        # Before the heartbeat: a delta bringing viewers to a heartbeat's seq leaves before the next one.
        self.ui_feed.tick(now, self.state, self.seq)
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
            try:
                sample = self.sampler.sample()
            except OSError as exc:  # /proc unreadable, at the open-file limit: the run goes on unsampled
                self.report_problem("sampler", f"cannot read the host's figures: {exc.strerror or exc}")
                return
            self.report_problem("sampler", None)
            self.accept_sample(sample)

    def start_http(self, port: int, *, control: bool = False) -> None:
        """Run the HTTP status server (a bus client like any viewer) as a supervised child of the daemon;
        with ``control`` its browser page may steer the run, for whoever holds the token it prints."""
        self.http_child = HttpChild(self.home, port, env=self.env, clock=self.clock, control=control)
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
