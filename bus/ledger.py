"""The ledger: what a run's event log has counted so far, so that nobody has to read the log again.

``runs/<id>/ledger.json`` holds the cumulative counters and usage of every event written, the stages that
completed, the totals each (stage, round) has counted, and the position in the log it reflects. The
persister folds every event it writes into its ledger and saves it atomically with every state save and
before a rotation can delete a generation. Readers — resume, the offline replay, the agents' "what was
already counted" — load the ledger and fold only the events written after its position
(:func:`load_ledger`): their cost is O(1) in the log's size, and the run's totals survive
``EVENT_LOG_RETENTION`` deleting the generations they came from.

A position names its file by inode (rotation renames, it does not copy) and by a digest of the file's
first line, so that it is found again after any number of renames, and in a copied run folder too.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from heidi_engine.bus.event import COST_FIELD, Event
from heidi_engine.bus.journal import event_files, latest_trainer_samples, load_state_file, tail_records
from heidi_engine.bus.state import (
    LOSS_HISTORY,
    RECENT_EVENTS,
    RunState,
    Status,
    add_deltas,
    apply_sample,
    status_after,
    zero_counters,
    zero_usage,
)
from heidi_engine.bus.storage import atomic_write_json

__all__ = ["LEDGER_FILE", "Ledger", "LogPosition", "Totals", "file_head", "load_ledger", "read_events_after", "replay"]

log = logging.getLogger(__name__)

LEDGER_FILE = "ledger.json"
_HEAD_MAX = 64 * 1024


class LogPosition(BaseModel):
    """A point in the event log: ``offset`` bytes into the file with this inode and first-line digest."""

    model_config = ConfigDict(extra="forbid")

    inode: int = Field(ge=0)
    head: str = ""  # sha256 of the file's first line; "" while the file was empty
    offset: int = Field(ge=0)


class Totals(BaseModel):
    """What one stage counted in one round: counter and usage sums, and the cost that was known."""

    model_config = ConfigDict(extra="forbid")

    counters: dict[str, int] = Field(default_factory=dict)
    usage: dict[str, float | int] = Field(default_factory=dict)
    known_cost: float = 0.0  # an unknown (null) cost adds nothing here; the run's total turns unknown

    def add(self, counters: Mapping[str, int], usage: Mapping[str, float | int | None]) -> None:
        """Add one event's deltas."""
        for name, delta in counters.items():
            self.counters[name] = self.counters.get(name, 0) + delta
        for name, value in usage.items():
            if value is not None:
                self.usage[name] = self.usage.get(name, 0) + value
        self.known_cost += usage.get(COST_FIELD) or 0.0


class Ledger(BaseModel):
    """The cumulative account of a run's event log up to :attr:`position`."""

    model_config = ConfigDict(extra="forbid")

    version: Literal[1] = 1
    run_id: str | None = None
    event_count: int = 0
    counters: dict[str, int] = Field(default_factory=zero_counters)
    usage: dict[str, float | int | None] = Field(default_factory=zero_usage)
    current_round: int = 0
    current_stage: str | None = None
    status: Status | None = None
    started_at: str | None = None
    last_event_ts: str | None = None
    error: str | None = None
    completed: list[tuple[int, str]] = Field(default_factory=list)
    counted: dict[str, Totals] = Field(default_factory=dict)
    position: LogPosition | None = None

    def add(self, record: Mapping[str, Any]) -> None:
        """Fold one event record, exactly as it was written to the log."""
        self.add_many((record,))

    def add_many(self, records: Sequence[Mapping[str, Any]]) -> None:
        """Fold event records, in order, exactly as they were written to the log (one pass)."""
        if not records:
            return
        if self.run_id is None:
            self.run_id = records[0]["run_id"]
        for record in records:
            counters, usage = record["counters_delta"], record["usage_delta"]
            stage, round_no, kind, level = record["stage"], record["round"], record["event_type"], record["level"]
            if counters or usage:
                add_deltas(self.counters, self.usage, counters, usage)
                key = f"{stage}:{round_no}"
                totals = self.counted.get(key)
                if totals is None:
                    totals = self.counted[key] = Totals()
                totals.add(counters, usage)
            if kind == "progress":
                if level == "error":
                    self.error = record.get("error") or record["message"]
                continue
            if kind == "stage_start":
                self.current_stage = stage
            elif kind == "stage_end" and level == "success" and (round_no, stage) not in self.completed:
                self.completed.append((round_no, stage))
            status = status_after(kind, level)
            if status is not None:
                self.status = status
                if status == "running" and self.started_at is None:
                    self.started_at = record["ts"]
            if level == "error":
                self.error = record.get("error") or record["message"]
        last = records[-1]
        self.event_count += len(records)
        self.current_round = last["round"]
        self.last_event_ts = last["ts"]

    def totals(self, stage: str, round_no: int) -> Totals:
        """What ``stage`` counted in round ``round_no`` (empty when nothing)."""
        return self.counted.get(f"{stage}:{round_no}") or Totals()

    def stage_cost(self, stage: str) -> float:
        """The known cost ``stage`` counted over every round."""
        return sum(t.known_cost for key, t in self.counted.items() if key.rsplit(":", 1)[0] == stage)

    def done(self) -> set[tuple[int, str]]:
        """(round, stage) pairs whose successful ``stage_end`` the log holds."""
        return {(int(r), str(s)) for r, s in self.completed}

    def fill(self, state: RunState) -> RunState:
        """Write the ledger's totals and position in the run into ``state`` (mutated and returned)."""
        state.run_id = state.run_id or self.run_id
        state.counters = dict(self.counters)
        state.usage = dict(self.usage)
        state.event_count = self.event_count
        state.current_round = self.current_round
        state.current_stage = self.current_stage
        state.last_event_ts = self.last_event_ts
        state.started_at = state.started_at or self.started_at
        if self.status is not None:
            state.status = self.status
        if self.error is not None:
            state.error = self.error
        return state

    def save(self, run_dir: str | os.PathLike[str]) -> None:
        """Replace ``ledger.json`` atomically."""
        atomic_write_json(Path(run_dir) / LEDGER_FILE, self.model_dump(mode="json"), indent=None)


def file_head(path: str | os.PathLike[str]) -> str:
    """The digest that names an event file: sha256 of its first complete line ("" when it has none)."""
    try:
        with open(path, "rb") as handle:
            first = handle.readline(_HEAD_MAX)
    except FileNotFoundError:
        return ""
    return hashlib.sha256(first).hexdigest() if first.endswith(b"\n") else ""


def _locate(files: list[Path], position: LogPosition) -> int | None:
    """Index in ``files`` of the file ``position`` names: by inode, else (a copied folder) by first line."""
    stats: list[os.stat_result | None] = []
    for path in files:
        try:
            stats.append(path.stat())
        except FileNotFoundError:
            stats.append(None)
    for index in range(len(files) - 1, -1, -1):
        st = stats[index]
        if st is not None and st.st_ino == position.inode and st.st_size >= position.offset:
            return index
    for index in range(len(files) - 1, -1, -1):
        st = stats[index]
        if st is not None and st.st_size >= position.offset and file_head(files[index]) == position.head:
            return index
    return None


def read_events_after(
    run_dir: str | os.PathLike[str], position: LogPosition | None
) -> Iterator[tuple[Event, Path, int]]:
    """The valid events written after ``position`` (all of them when ``None``), with each one's file and
    the offset just past it. Torn or invalid lines are skipped."""
    files = event_files(run_dir)
    start, offset = 0, 0
    if position is not None:
        found = _locate(files, position)
        if found is None:
            log.warning("%s: the ledger's log position is in no event file; using the ledger alone", run_dir)
            return
        start, offset = found, position.offset
    for index in range(start, len(files)):
        path = files[index]
        try:
            handle = open(path, "rb")  # noqa: SIM115 - closed below; a generator must not hold it past use
        except FileNotFoundError:
            continue
        with handle:
            if index == start:
                handle.seek(offset)
            pos = handle.tell()
            for line in handle:
                if not line.endswith(b"\n"):
                    break
                pos += len(line)
                try:
                    event = Event.model_validate(json.loads(line), context={"redacted": True})
                except (ValueError, ValidationError):
                    continue
                yield event, path, pos


def load_ledger(run_dir: str | os.PathLike[str]) -> Ledger:
    """The run's ledger brought up to date with every event written after it was saved.

    A run without ``ledger.json`` (or with an unreadable one) is counted from the event files that
    exist. The returned ledger's position is the end of the log as read.
    """
    folder = Path(run_dir)
    ledger: Ledger | None = None
    try:
        ledger = Ledger.model_validate_json((folder / LEDGER_FILE).read_bytes())
    except FileNotFoundError:
        pass
    except (OSError, ValueError, ValidationError) as exc:
        log.warning("%s: unreadable %s (%s); counting from the event files", folder, LEDGER_FILE, exc)
    if ledger is None:
        ledger = Ledger()
    last: tuple[Path, int] | None = None
    for event, path, end in read_events_after(folder, ledger.position):
        ledger.add(event.to_record())
        last = (path, end)
    if last is not None:
        path, end = last
        ledger.position = LogPosition(inode=path.stat().st_ino, head=file_head(path), offset=end)
    return ledger


def replay(run_dir: str | os.PathLike[str], ledger: Ledger | None = None) -> RunState:
    """Rebuild a run's state from its files alone (no supervisor needed), in time independent of the log.

    Totals come from the ledger (``ledger`` when the caller has just loaded it), the latest events from the
    end of the log, the loss curve from the end of ``metrics.jsonl``; status, flags and config from
    ``state.json``, since no event carries them.
    """
    saved = load_state_file(run_dir)
    state = RunState()
    if saved is not None:
        state.run_id = saved.run_id
        state.status = saved.status
        state.total_rounds = saved.total_rounds
        state.config = saved.config
        state.best_adapter = saved.best_adapter
        state.error = saved.error
        # Eval outcomes are a handful per run: state.json carries them (saved at every stage boundary).
        state.evals, state.best_round = saved.evals, saved.best_round
        state.teacher_endpoints = saved.teacher_endpoints  # no event carries a teacher pool's per-server usage
    (ledger or load_ledger(run_dir)).fill(state)
    state.recent_events = tail_records(run_dir, RECENT_EVENTS)
    for sample in latest_trainer_samples(run_dir, LOSS_HISTORY):
        apply_sample(state, sample)
    if saved is not None:
        state.status = saved.status
        state.stop_requested, state.pause_requested = saved.stop_requested, saved.pause_requested
        state.gpus, state.host, state.gpu_message = saved.gpus, saved.host, saved.gpu_message
    return state
