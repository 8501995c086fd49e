"""Reading ingress: what agents send, taken in batches, sorted by the gate and handed on in order.

Events are persisted and published in the order they arrived: those before a sample or a status message
are handed on first. An agent that is heard from is alive (and says whether it is parked).
"""

from __future__ import annotations

from typing import Any, Protocol

from heidi_engine.bus.event import Event
from heidi_engine.bus.message import AgentStatus
from heidi_engine.bus.server import BusServer
from heidi_engine.bus.state import EvalSample, RunState, SystemSample, TeacherSample, TrainerSample
from heidi_engine.supervisor.ingress import IngressGate

__all__ = ["INGEST_BATCH", "Intake", "IntakeHost"]

INGEST_BATCH = 2000  # events taken from ingress per loop step (whole batches: it may go a batch over)


class IntakeHost(Protocol):
    """What the intake hands agents' messages to (the supervisor)."""

    @property
    def state(self) -> RunState: ...

    def accept_events(self, events: list[Event], records: list[dict[str, Any]] | None = None) -> None: ...

    def accept_sample(self, sample: TrainerSample | SystemSample | EvalSample | TeacherSample) -> None: ...

    def agent_heard(self, sender: str, parked: bool | None, *, pid: int | None = None, done: bool = False) -> None: ...


def records_of(
    records: list[dict[str, Any]] | None, events: list[Event], kept: list[Event], out: list[dict[str, Any]]
) -> None:
    """Append to ``out`` the record of each event in ``kept`` (a subsequence of ``events``, whose records
    are ``records``, or ``None`` when the events were validated one by one: their own records then)."""
    if records is None:
        out.extend(event.to_record() for event in kept)
    elif len(kept) == len(events):
        out.extend(records)
    else:
        pairs = iter(zip(events, records, strict=True))
        out.extend(next(record for event, record in pairs if event is wanted) for wanted in kept)


class Intake:
    """Takes what agents sent from ``server``'s ingress, lets ``gate`` sort it, and hands it to ``host``."""

    def __init__(self, server: BusServer, gate: IngressGate, host: IntakeHost) -> None:
        self.server = server
        self.gate = gate
        self.host = host

    def ingest(self) -> None:
        """One loop step's worth: up to about :data:`INGEST_BATCH` messages."""
        host = self.host
        self.gate.begin()
        batch: list[Event] = []
        batch_records: list[dict[str, Any]] = []  # the batch's records, each event's (the fast path's)
        taken = 0
        while taken < INGEST_BATCH:
            received = self.server.recv_ingress(64)
            if not received:
                break
            for header, body_bytes in received:
                if header.kind == "event":
                    events, records = self.server.decode_ingress_batch(body_bytes)
                    taken += max(1, len(events))
                    kept = self.gate.events(host.state, events)
                    if kept:
                        batch.extend(kept)
                        records_of(records, events, kept, batch_records)
                        host.agent_heard(header.sender, None)
                    continue
                taken += 1
                body = self.server.decode_ingress_body(header, body_bytes)
                if body is None:
                    continue
                # Keep order: events before a sample or status are persisted and published first.
                host.accept_events(batch, batch_records)
                batch, batch_records = [], []
                if isinstance(body, SystemSample):
                    self.gate.refuse("system_sample")  # only the supervisor samples the machine
                elif isinstance(body, (TrainerSample, EvalSample, TeacherSample)):
                    if not self.gate.foreign(host.state, body.run_id or "") and (
                        self.gate.sample_fits(host.state, body)
                        if isinstance(body, TeacherSample)
                        else self.gate.round_fits(host.state, body.round, f"a {body.type} sample")
                    ):
                        host.agent_heard(header.sender, None)
                        host.accept_sample(body)
                elif isinstance(body, AgentStatus) and (
                    body.run_id is None or not self.gate.foreign(host.state, body.run_id)
                ):
                    host.agent_heard(body.stage, body.phase == "parked", pid=body.pid, done=body.phase == "done")
        host.accept_events(batch, batch_records)
