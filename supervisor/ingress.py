"""Which agents' messages count: the gate between ingress and the supervisor's state.

An agent speaks only for its own stage of the current run. Events that only the supervisor may write
(the pipeline's and the stages' starts and ends), events and samples of another run (or of no active
run), and machine samples (the supervisor samples the machine itself) are refused and counted by reason;
the counts are the ``status`` command's ``refused_events``.
"""

from __future__ import annotations

from collections import Counter

from heidi_engine.bus.event import Event
from heidi_engine.bus.state import ACTIVE_STATUSES, RunState

__all__ = ["SUPERVISOR_ONLY", "IngressGate"]

SUPERVISOR_ONLY = frozenset({"pipeline_start", "pipeline_stop", "pipeline_complete", "stage_start", "stage_end"})


class IngressGate:
    """Sorts what agents send into what counts and what is refused (counted in :attr:`refused`)."""

    def __init__(self) -> None:
        self.refused: Counter[str] = Counter()

    def refuse(self, reason: str) -> None:
        """Count one refused message."""
        self.refused[reason] += 1

    def foreign(self, state: RunState, run_id: str) -> bool:
        """True (and counted) when ``run_id`` is not the active run's."""
        if state.run_id == run_id and state.status in ACTIVE_STATUSES:
            return False
        self.refuse("wrong_run")
        return True

    def events(self, state: RunState, events: list[Event]) -> list[Event]:
        """The events an agent may send, in order; the others refused."""
        kept = []
        for event in events:
            if event.event_type in SUPERVISOR_ONLY:
                self.refuse("supervisor_only")
            elif not self.foreign(state, event.run_id):
                kept.append(event)
        return kept
