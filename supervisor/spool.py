"""The spool: the persister behind a buffer, so that a full disk loses nothing and stops nothing.

Events that could not be written wait here, in order, and everything accepted later waits behind them
(the broker stops taking ingress meanwhile: what agents send waits in the bus server's ingress buffer,
bounded in bytes, then in their own sockets, rather than fill memory).
Each second :meth:`Spool.retry` writes what it can; only what reached the disk is handed back to be
applied and published, so write-ahead holds throughout. Every write site reports its outcome to the
supervisor's health (``report(site, problem)``): a failure sets the problem, the next success clears it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from heidi_engine.bus.event import Event
from heidi_engine.bus.state import EXTERNAL_MAX, EvalSample, RunState, SystemSample, TrainerSample
from heidi_engine.supervisor.persister import Persister, PersistError

log = logging.getLogger(__name__)

RETRY_S = 1.0

Written = list[tuple[Event, dict[str, Any]]]


def why(exc: OSError) -> str:
    """An OS error in a few words: ``No space left on device``."""
    return exc.strerror or str(exc)


class Spool:
    """Writes one run's files through its :class:`Persister`, holding back what a write error refused."""

    def __init__(
        self,
        persister: Persister,
        report: Callable[[str, str | None], object],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.persister = persister
        self._report = report
        self._clock = clock
        self._held: list[Event] = []
        self._metrics_failed = False
        self._retry_at = float("-inf")
        # The last (round, step) of each trainer source ("" the pipeline's), the latest few only.
        self._last_trainer: dict[str, tuple[int, int]] = {}

    @property
    def held(self) -> bool:
        """True while events wait for the disk."""
        return bool(self._held)

    def write_events(self, events: list[Event], records: list[dict[str, Any]] | None = None) -> Written:
        """Append ``events`` (with their ``records`` when the caller has them) after any held ones; returns
        those now on disk, in order, with their records."""
        if self._held:
            self._held.extend(events)
            return []
        return self._append(events, records)

    def _append(self, events: list[Event], records: list[dict[str, Any]] | None = None) -> Written:
        if records is None:
            records = [e.to_record() for e in events]
        written = len(records)
        try:
            self.persister.append_events(records)
        except PersistError as exc:
            written = exc.written
            self._held = events[written:]
            self._retry_at = self._clock() + RETRY_S
            self._report("events.jsonl", f"cannot write events.jsonl: {why(exc)}; "
                         "events wait in memory and agents wait for them")
        else:
            self._report("events.jsonl", None)
        return list(zip(events[:written], records[:written], strict=True))

    def write_sample(self, sample: TrainerSample | SystemSample | EvalSample) -> None:
        """Append a gauge sample to ``metrics.jsonl`` (a trainer resumed from a checkpoint cuts it back)."""
        try:
            if isinstance(sample, TrainerSample):
                # Each source's own history: an external trainer's samples never cut the pipeline's.
                key, last = (sample.round, sample.step), self._last_trainer.pop(sample.source, None)
                self._last_trainer[sample.source] = key
                if len(self._last_trainer) > EXTERNAL_MAX + 1:
                    del self._last_trainer[next(iter(self._last_trainer))]
                if last is not None and key[0] == last[0] and key[1] <= last[1]:
                    # A trainer resumed from a checkpoint: its metric history restarts at that step.
                    self.persister.truncate_metrics_from(sample.round, sample.step, sample.source)
            self.persister.append_metric(sample.model_dump(mode="json"))
        except OSError as exc:
            self._metrics_failed = True
            self._retry_at = min(self._retry_at, self._clock() + RETRY_S)
            self._report("metrics.jsonl", f"cannot write metrics.jsonl: {why(exc)}; samples wait in memory")
        else:
            if self._metrics_failed:
                self._metrics_failed = False
                self._report("metrics.jsonl", None)
        self.persister.mark_dirty()

    def write_state(self, state: RunState, *, unless_recent: bool = False) -> None:
        """``state.json`` and the ledger, now or (``unless_recent``) if a second has passed since the last."""
        try:
            if unless_recent:
                self.persister.maybe_write_state(state)
            else:
                self.persister.write_state(state)
        except OSError as exc:
            self._report("state.json", f"cannot write state.json: {why(exc)}")
        else:
            self._report("state.json", None)

    def retry(self, now: float) -> Written:
        """Once a second: write held events (returned when on disk) and buffered metric lines."""
        if now < self._retry_at or not (self._held or self._metrics_failed):
            return []
        self._retry_at = now + RETRY_S
        written: Written = []
        if self._held:
            held, self._held = self._held, []
            written = self._append(held)
        if self._metrics_failed:
            try:
                self.persister.flush_metrics()
            except OSError:
                return written
            self._metrics_failed = False
            self._report("metrics.jsonl", None)
        return written

    def close(self, state: RunState) -> None:
        """A last try for held events, the final state, and the files closed; nothing raises."""
        if self._held:
            try:
                self.persister.append_events([e.to_record() for e in self._held])
            except PersistError as exc:
                log.error("%d event(s) of %s could not be written at its close: %s",
                          len(self._held) - exc.written, self.persister.run_dir.name, why(exc))
            self._held = []
        try:
            self.persister.close(state)
        except OSError as exc:
            log.error("closing %s: %s", self.persister.run_dir.name, why(exc))
