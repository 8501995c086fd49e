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

A lost ledger is never counted again in silence from a log that lost generations: ``state.json`` stands in
for it when it can (:mod:`heidi_engine.bus.salvage`), and otherwise :class:`LedgerLost` says so.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import reduce
from operator import add
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from heidi_engine.bus import storage
from heidi_engine.bus.event import COST_FIELD
from heidi_engine.bus.journal import (
    CONFIG_FILE,
    STATE_FILE,
    LogPosition,
    file_head,
    latest_trainer_samples,
    load_state_file,
    log_is_whole,
    read_events_after,
    tail_records,
)
from heidi_engine.bus.salvage import done_by, find_anchor, next_stage, previous_stage
from heidi_engine.bus.state import LOSS_HISTORY, RECENT_EVENTS, RunState, Status, apply_sample, status_after
from heidi_engine.bus.storage import json_bytes, read_json
from heidi_engine.bus.totals import Sums, add_sums, clamp_totals, zero_counters, zero_usage

__all__ = [
    "LEDGER_FILE", "UNATTRIBUTED", "Ledger", "LedgerLost", "LogPosition", "Totals", "file_head", "load_ledger",
    "read_events_after", "replay", "stored_state",
]

log = logging.getLogger(__name__)

LEDGER_FILE = "ledger.json"
# The key in ``counted`` of what a ledger rebuilt from state.json cannot attribute to a stage and round.
UNATTRIBUTED = "unattributed:0"
_EVENT_STATUSES = frozenset({"running", "completed", "stopped", "failed"})  # those a pipeline event sets
_Records = list[Mapping[str, Any]]


class LedgerLost(Exception):
    """``ledger.json`` is missing or unreadable, rotation deleted event files, and ``state.json`` cannot
    stand in: the run's totals cannot be known. The message is one line naming both files and how to
    count again from the events that remain."""


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

    def add_sums(self, sums: Sums, records: Sequence[Mapping[str, Any]]) -> None:
        """Add the sums of a batch of ``records``: exactly what :meth:`add` gives for each in turn (which
        it does when the sums cannot give the same)."""
        counters, usage = self.counters, self.usage
        if not sums.fits(counters, usage, missing=0):
            for record in records:
                self.add(record["counters_delta"], record["usage_delta"])
            return
        for name, total in sums.counters.items():
            counters[name] = counters.get(name, 0) + total
        for name, total in sums.usage.items():
            if name == COST_FIELD:
                usage[name] = reduce(add, [cost for cost in sums.costs if cost is not None], usage.get(name, 0))
            else:
                usage[name] = usage.get(name, 0) + total
        # As add: each event adds its known cost or 0.0 (the first 0.0 turns a -0.0 into 0.0).
        self.known_cost = reduce(add, [cost or 0.0 for cost in sums.costs], self.known_cost + 0.0)


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

    @model_validator(mode="before")
    @classmethod
    def _totals_in_bounds(cls, data: Any) -> Any:
        if isinstance(data, dict):
            clamp_totals("ledger", data.get("counters"), data.get("usage"))
            counted = data.get("counted")
            for key, totals in counted.items() if isinstance(counted, dict) else ():
                if isinstance(totals, dict):
                    # A stage's totals keep only known amounts: a cost that cannot be read is left out.
                    usage = totals.get("usage")
                    usage = {**usage, "known_cost": totals.get("known_cost", 0.0)} if isinstance(usage, dict) else None
                    clamp_totals(f"ledger, {key}", totals.get("counters"), usage)
                    if usage is not None:
                        totals["known_cost"] = usage.pop("known_cost") or 0.0
                        totals["usage"] = {name: value for name, value in usage.items() if value is not None}
        return data

    def add(self, record: Mapping[str, Any]) -> None:
        """Fold one event record, exactly as it was written to the log."""
        self.add_many((record,))

    def add_many(self, records: Sequence[Mapping[str, Any]]) -> None:
        """Fold event records, in order, exactly as they were written to the log (one pass): the same
        ledger as :meth:`add` on each in turn, its counts summed once per (stage, round) of the batch."""
        if not records:
            return
        if self.run_id is None:
            self.run_id = records[0]["run_id"]
        groups: dict[tuple[str, int], _Records] = {}  # by (stage, round), first counted first
        for record in records:
            if record["counters_delta"] or record["usage_delta"]:
                key = (record["stage"], record["round"])
                group = groups.get(key)
                if group is None:
                    group = groups[key] = []
                group.append(record)
        if groups:
            self._add_groups(records, groups)
        for record in records:
            if record["event_type"] != "progress" or record["level"] == "error":  # a plain progress says nothing
                self.note(record)
        last = records[-1]
        self.event_count += len(records)
        self.current_round = last["round"]
        self.last_event_ts = last["ts"]

    def note(self, record: Mapping[str, Any]) -> None:
        """What one record says of the run besides its counts: a stage started or completed, the status a
        pipeline event sets, an error."""
        stage, round_no, kind, level = record["stage"], record["round"], record["event_type"], record["level"]
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

    def _add_groups(self, records: Sequence[Mapping[str, Any]], by_pair: dict[tuple[str, int], _Records]) -> None:
        """Add each (stage, round)'s deltas to its totals, and all of them to the run's."""
        groups = {f"{stage}:{round_no}": group for (stage, round_no), group in by_pair.items()}
        if len(groups) < len(by_pair):  # a round written as a string too: one key, its records in order
            groups = {}
            for record in records:
                if record["counters_delta"] or record["usage_delta"]:
                    groups.setdefault(f"{record['stage']}:{record['round']}", []).append(record)
        parts = {key: Sums(group) for key, group in groups.items()}
        if len(parts) == 1:
            whole = next(iter(parts.values()))
        else:
            costly = [part.costs for part in parts.values() if part.costs]
            # The run's cost adds them in the batch's order, across stages and rounds.
            costs = (costly[0] if costly else []) if len(costly) < 2 else [
                r["usage_delta"][COST_FIELD] for r in records if COST_FIELD in r["usage_delta"]]
            whole = Sums.merged(parts.values(), costs)
        add_sums(self.counters, self.usage, whole, records)
        for key, part in parts.items():
            totals = self.counted.get(key)
            if totals is None:
                totals = self.counted[key] = Totals()
            totals.add_sums(part, groups[key])

    def totals(self, stage: str, round_no: int) -> Totals:
        """What ``stage`` counted in round ``round_no`` (empty when nothing)."""
        return self.counted.get(f"{stage}:{round_no}") or Totals()

    def stage_cost(self, stage: str) -> float:
        """The known cost ``stage`` counted over every round (with, in a ledger rebuilt from state.json,
        the cost no stage can be named for: a budget must not take it as unspent)."""
        return sum(t.known_cost for key, t in self.counted.items()
                   if key == UNATTRIBUTED or key.rsplit(":", 1)[0] == stage)

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

    def to_bytes(self) -> bytes:
        """``ledger.json``'s content (one line), for :meth:`save` or a writer that replaces it later."""
        return json_bytes(self.model_dump(mode="json"))

    def save(self, run_dir: str | os.PathLike[str]) -> None:
        """Replace ``ledger.json`` atomically."""
        storage.atomic_write_bytes(Path(run_dir) / LEDGER_FILE, self.to_bytes())


def load_ledger(run_dir: str | os.PathLike[str]) -> Ledger:
    """The run's ledger brought up to date with every event written after it was saved.

    Without a readable ``ledger.json``, the event files are counted when they hold the whole run
    (:func:`~heidi_engine.bus.journal.log_is_whole`); when rotation deleted some, ``state.json`` stands in
    (its totals, the stages it shows complete, its last event as the position) if the log still holds
    that event and all that the stage a resume continues has counted; otherwise :class:`LedgerLost`. An
    empty ledger (``{}``, an operator's choice) counts the events still on disk. The returned ledger's
    position is the end of the log as read.
    """
    folder = Path(run_dir)
    ledger, why = _saved(folder)
    stand_in: _StandIn | None = None
    if ledger is None:
        ledger, stand_in = _stand_in(folder, why)
    elif ledger.position is None and ledger.event_count == 0 and not log_is_whole(folder):
        log.warning("%s: %s is empty: counting only the events still on disk", folder, LEDGER_FILE)
    last: tuple[Path, int] | None = None
    ended: set[tuple[int, str]] = set()  # successful stage ends after a stand-in's position
    for event, path, end in read_events_after(folder, ledger.position):
        ledger.add(event.to_record())
        last = (path, end)
        if event.event_type == "stage_end" and event.level == "success":
            ended.add((event.round, event.stage))
    if last is not None:
        path, end = last
        ledger.position = LogPosition(inode=path.stat().st_ino, head=file_head(path), offset=end)
    if stand_in is not None:
        _attribute(folder, ledger, stand_in, ended)
    return ledger


def _saved(folder: Path) -> tuple[Ledger | None, str]:
    """``ledger.json``, or ``None`` and what is wrong with it."""
    try:
        return Ledger.model_validate_json((folder / LEDGER_FILE).read_bytes()), ""
    except FileNotFoundError:
        return None, "missing"
    except ValidationError as exc:
        return None, f"unreadable ({exc.errors()[0]['msg'][:120]})"
    except (OSError, ValueError) as exc:
        return None, f"unreadable ({str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__})"


@dataclass(frozen=True)
class _StandIn:
    """What a ledger rebuilt from ``state.json`` still has to settle once the events after it are read."""

    anchor: tuple[Path, int]  # the state's last event: its file and the offset past it
    counters: dict[str, int]
    usage: dict[str, float | int | None]
    total_rounds: int
    why: str  # what is wrong with ledger.json


def _lost(folder: Path, why: str, reason: str) -> LedgerLost:
    return LedgerLost(
        f"{folder.name}: {LEDGER_FILE} is {why} and {STATE_FILE} cannot stand in for it ({reason}); rotation "
        f"deleted the oldest event files, so the run's totals cannot be counted again. To count only the "
        f"events still on disk, write an empty ledger: echo '{{}}' > {folder / LEDGER_FILE}"
    )


def _stand_in(folder: Path, why: str) -> tuple[Ledger, _StandIn | None]:
    """The ledger to start from when ``ledger.json`` is lost: empty when the event files hold the whole
    run, else rebuilt from ``state.json`` and positioned after its last event."""
    if log_is_whole(folder):
        if why != "missing":
            log.warning("%s: %s is %s; counting the event files, which hold the whole run", folder, LEDGER_FILE, why)
        return Ledger(), None
    state = load_state_file(folder)
    if state is None:
        raise _lost(folder, why, "it is missing or unreadable")
    try:
        path, end = find_anchor(folder, state.recent_events)
    except ValueError as exc:
        raise _lost(folder, why, f"it {exc}") from None
    ledger = Ledger(
        run_id=state.run_id or folder.name, event_count=state.event_count, counters=dict(state.counters),
        usage=dict(state.usage), current_round=state.current_round, current_stage=state.current_stage,
        status=state.status if state.status in _EVENT_STATUSES else "running" if state.run_id else None,
        started_at=state.started_at, last_event_ts=state.last_event_ts, error=state.error,
        completed=sorted(done_by(state)),
        position=LogPosition(inode=path.stat().st_ino, head=file_head(path), offset=end),
    )
    log.warning("%s: %s is %s and rotation deleted event files: rebuilt from %s (%d events) and the events "
                "after it", folder, LEDGER_FILE, why, STATE_FILE, state.event_count)
    return ledger, _StandIn((path, end), dict(state.counters), dict(state.usage), state.total_rounds, why)


def _attribute(folder: Path, ledger: Ledger, stand_in: _StandIn, ended: set[tuple[int, str]]) -> None:
    """Give the stage that a resume continues exactly what it counted (``ended``: the stages that ended
    after the stand-in's position), and what no stage can be named for to :data:`UNATTRIBUTED`."""
    resume_at = next_stage(ledger.done())
    left = ledger.status != "completed" and (resume_at[0] <= stand_in.total_rounds or not stand_in.total_rounds)
    counted = _counted_before(folder, stand_in, resume_at, ended) if left else Totals()
    # Never below 0: a cost's float sums may differ in their last bit.
    ledger.counted[UNATTRIBUTED] = Totals(
        counters={k: max(0, v - counted.counters.get(k, 0)) for k, v in stand_in.counters.items()
                  if v != counted.counters.get(k, 0)},
        usage={k: max(0, v - counted.usage.get(k, 0)) for k, v in stand_in.usage.items()
               if v is not None and v != counted.usage.get(k, 0)},
        known_cost=max(0.0, (stand_in.usage.get(COST_FIELD) or 0.0) - counted.known_cost),
    )
    if left:
        key = f"{resume_at[1]}:{resume_at[0]}"
        after = ledger.counted.get(key)  # what it counted after the position, folded already
        if after is not None:
            counted.add(after.counters, after.usage)
        ledger.counted[key] = counted


def _counted_before(folder: Path, stand_in: _StandIn, resume_at: tuple[int, str], ended: set[tuple[int, str]]) -> Totals:
    """What ``resume_at`` counted up to the stand-in's position, read from the log.

    A stage's events all follow the successful end of the stage before it: when the log no longer holds
    that end, part of what the stage counted went with a deleted file, and it would count it again.
    """
    counted = Totals()
    before = previous_stage(resume_at)
    seen = before in ended
    anchor_file, anchor_end = stand_in.anchor
    reached = False  # the anchor's file: what follows its offset there, or any later file, is after it
    for event, path, end in read_events_after(folder, None):
        reached = reached or path == anchor_file
        if reached and (path != anchor_file or end > anchor_end):
            break
        if (event.round, event.stage) == resume_at:
            counted.add(event.counters_delta, event.usage_delta)
        seen = seen or (event.event_type == "stage_end" and event.level == "success"
                        and (event.round, event.stage) == before)
    if not seen:
        stage = f"{resume_at[1]} of round {resume_at[0]}"
        raise _lost(folder, stand_in.why, f"what {stage} counted began in a deleted event file")
    return counted


def replay(run_dir: str | os.PathLike[str], ledger: Ledger | None = None) -> RunState:
    """Rebuild a run's state from its files alone (no supervisor needed), in time independent of the log.

    Totals come from the ledger (``ledger`` when the caller has just loaded it), the latest events from the
    end of the log, the loss curve from the end of ``metrics.jsonl``; status, flags and config from
    ``state.json``, since no event carries them (without it: the status the events set, and the config
    from ``config.json``).
    """
    saved = load_state_file(run_dir)
    state = RunState()
    if saved is None:
        # Without state.json, the run's settings are those it was started with.
        with contextlib.suppress(OSError, ValueError):
            config = read_json(Path(run_dir) / CONFIG_FILE)
            state.config = config if isinstance(config, dict) else {}
            state.total_rounds = int(state.config.get("ROUNDS") or 0)
    else:
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
    if saved is None and state.status == "idle" and state.event_count:
        state.status = "running"  # the events that set it went with deleted files (a forced count): it ran
    state.recent_events = tail_records(run_dir, RECENT_EVENTS)
    for sample in latest_trainer_samples(run_dir, LOSS_HISTORY):
        apply_sample(state, sample)
    if saved is not None:
        state.status = saved.status
        state.stop_requested, state.pause_requested = saved.stop_requested, saved.pause_requested
        state.gpus, state.host, state.gpu_message = saved.gpus, saved.host, saved.gpu_message
    return state


def stored_state(run_dir: str | os.PathLike[str]) -> RunState | None:
    """The run as its files tell it: ``state.json``, or when that cannot be read, the run replayed from
    its ledger (its status the one the events set); ``None`` when the folder holds no run at all.
    Raises :class:`LedgerLost` when neither file can be read and the event files do not hold the run."""
    saved = load_state_file(run_dir)
    if saved is not None:
        return saved
    state = replay(run_dir)
    return state if state.run_id is not None else None
