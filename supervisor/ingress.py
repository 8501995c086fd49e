"""Which agents' messages count: the gate between ingress and the supervisor's state.

An agent speaks only for its own stage of the current run. Events that only the supervisor may write
(the pipeline's and the stages' starts and ends), events and samples of another run (or of no active
run), and machine samples (the supervisor samples the machine itself) are refused and counted by reason;
the counts are the ``status`` command's ``refused_events``. So are numbers out of the run's bounds: an
event or sample of a round past ``total_rounds + 1`` (``bad_round``: the ledger and the state keep
entries per round, and must stay small) and an event or teacher sample that would carry a total past its bound (``bad_value``).
An external trainer (a script reporting on its own, stage ``external``) counts nothing: an event of it
carrying counts is refused (``external_counts``).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from typing import Literal

from heidi_engine.bus.event import COST_FIELD, MAX_TOTAL, MAX_TOTAL_COST_USD, Event
from heidi_engine.bus.state import ACTIVE_STATUSES, RunState, TeacherSample
from heidi_engine.bus.totals import add_deltas, overflow

log = logging.getLogger(__name__)
_LOG_EVERY_S = 60.0

__all__ = ["SUPERVISOR_ONLY", "IngressGate"]

SUPERVISOR_ONLY = frozenset({"pipeline_start", "pipeline_stop", "pipeline_complete", "stage_start", "stage_end"})


class IngressGate:
    """Sorts what agents send into what counts and what is refused (counted in :attr:`refused`)."""

    def __init__(self) -> None:
        self.refused: Counter[str] = Counter()
        self._logged: dict[str, float] = {}
        # The run's totals with every event kept since :meth:`begin`, which the state may not hold yet;
        # None until an event with deltas comes, and "far" while every total was under half its bound.
        self._totals: tuple[dict[str, int], dict[str, float | int | None]] | Literal["far"] | None = None

    def begin(self) -> None:
        """Start a new take from ingress: totals are read from the state again at the first event."""
        self._totals = None

    def _take_totals(self, state: RunState) -> tuple[dict[str, int], dict[str, float | int | None]] | Literal["far"]:
        if self._totals is None:
            # One take is at most some 65,000 events (64 messages of 1,024), each adding at most MAX_DELTA
            # per total: about 2**47, far less than the half of a bound. Totals under it need no check.
            far = all(v <= MAX_TOTAL // 2 for v in state.counters.values()) and all(
                v is None or v <= (MAX_TOTAL_COST_USD if k == COST_FIELD else MAX_TOTAL) / 2 for k, v in state.usage.items()
            )
            self._totals = "far" if far else (dict(state.counters), dict(state.usage))
        return self._totals

    def refuse(self, reason: str, detail: str = "") -> None:
        """Count one refused message; with ``detail``, say why in the log (once a minute per reason)."""
        self.refused[reason] += 1
        now = time.monotonic()
        if detail and now - self._logged.get(reason, -_LOG_EVERY_S) >= _LOG_EVERY_S:
            self._logged[reason] = now
            log.warning("refused %s (%s, %d so far)", detail, reason, self.refused[reason])

    def foreign(self, state: RunState, run_id: str) -> bool:
        """True (and counted) when ``run_id`` is not the active run's."""
        if state.run_id == run_id and state.status in ACTIVE_STATUSES:
            return False
        self.refuse("wrong_run")
        return True

    def events(self, state: RunState, events: list[Event]) -> list[Event]:
        """The events an agent may send, in order; the others refused.

        Totals are checked with every event kept since :meth:`begin` too: the caller hands kept events to
        the state in batches, so several calls may come before the state holds them.
        """
        kept = []
        last_round = state.total_rounds + 1
        for event in events:
            if event.event_type in SUPERVISOR_ONLY:
                self.refuse("supervisor_only")
            elif self.foreign(state, event.run_id):
                continue
            elif event.round > last_round:
                self.refuse("bad_round", f"an event of round {event.round} from {event.stage}: this run has {state.total_rounds}")
            elif event.stage == "external" and (event.counters_delta or event.usage_delta):
                # A training script reporting on its own adds nothing to the pipeline's counts.
                self.refuse("external_counts", "an external trainer's event carrying counts")
            elif event.counters_delta or event.usage_delta:
                totals = self._take_totals(state)
                if totals == "far":
                    kept.append(event)
                    continue
                counters, usage = totals
                name = overflow(counters, usage, event.counters_delta, event.usage_delta)
                if name is not None:
                    self.refuse("bad_value", f"an event from {event.stage}: it would carry the run's {name} past its bound")
                    continue
                add_deltas(counters, usage, event.counters_delta, event.usage_delta)
                kept.append(event)
            else:
                kept.append(event)
        return kept

    def round_fits(self, state: RunState, round_no: int, what: str) -> bool:
        """True when ``round_no`` is one of the run's (at most ``total_rounds + 1``); else refused."""
        if round_no <= state.total_rounds + 1:
            return True
        self.refuse("bad_round", f"{what} of round {round_no}: this run has {state.total_rounds}")
        return False

    def sample_fits(self, state: RunState, sample: TeacherSample) -> bool:
        """True when no endpoint's totals would pass their bound with ``sample``'s deltas; else refused."""
        for name, delta in sample.endpoints.items():
            entry = state.teacher_endpoints.get(name)
            if entry is None:
                continue
            total = overflow({"errors": entry.errors}, entry.usage, {"errors": delta.errors}, delta.usage)
            if total is not None:
                self.refuse("bad_value", f"a teacher sample: it would carry {name}'s {total} past its bound")
                return False
        return True
