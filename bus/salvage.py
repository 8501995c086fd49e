"""What ``state.json`` and the event files that remain still say of a run whose ledger is lost.

When ``ledger.json`` is missing or unreadable and rotation has deleted the oldest event files, the log
can no longer be counted again; ``state.json``, saved with the ledger every second, can stand in for it
(:func:`~heidi_engine.bus.ledger.load_ledger` builds the ledger). These are its pure parts: where in the
log the state's last event ends (:func:`find_anchor`), which stages the state shows complete
(:func:`done_by`), and the order of the pipeline's stages (:func:`next_stage`, :func:`previous_stage`).
"""

from __future__ import annotations

import json
import os
from collections import deque
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from heidi_engine.bus.event import PIPELINE_STAGES
from heidi_engine.bus.journal import event_files, iter_lines
from heidi_engine.bus.state import RunState

__all__ = ["done_by", "find_anchor", "next_stage", "previous_stage"]

Key = tuple[int, str]


def find_anchor(run_dir: str | os.PathLike[str], recent: Sequence[Mapping[str, Any]]) -> tuple[Path, int]:
    """The event file holding the last of ``recent`` (a state's latest events, as written) and the offset
    just past it: the position in the log that the state reflects.

    The event must be in the files once, with the events before it (as far as the files go) right before
    it. Raises ``ValueError`` saying why the place cannot be found (worded to follow "state.json").
    """
    if not recent or not isinstance(recent[-1].get("ts"), str):
        raise ValueError("holds no event to find its place in the log by")
    last = recent[-1]
    needle = b'"ts":' + json.dumps(last["ts"]).encode()  # a cheap test before a line is parsed
    before: deque[bytes] = deque(maxlen=max(len(recent) - 1, 1))
    found: list[tuple[Path, int]] = []
    for path in event_files(run_dir):
        end = 0
        for line in iter_lines(path):
            end += len(line)
            if needle in line and _parsed(line) == last and _follows(before, recent):
                found.append((path, end))
            before.append(line)
    if not found:
        raise ValueError("ends with an event that the event files no longer hold")
    if len(found) > 1:
        raise ValueError("ends with an event found at several places of the event files")
    return found[0]


def _parsed(line: bytes) -> object:
    try:
        return json.loads(line)
    except ValueError:
        return None


def _follows(before: deque[bytes], recent: Sequence[Mapping[str, Any]]) -> bool:
    """Whether the lines before a candidate are the state's events before its last (as far as both go)."""
    earlier = list(recent[:-1])
    for line in reversed(before):
        if not earlier:
            return True
        if _parsed(line) != earlier.pop():
            return False
    return True


def done_by(state: RunState) -> set[Key]:
    """The (round, stage) pairs that ``state`` shows complete, round ends included.

    Rounds run one after the other and stages in order, and an event of round R is only ever sent once
    every round before it ended: so everything of the rounds before the current one, and the stages
    before the current stage in it, are complete. The current stage is complete only when its successful
    ``stage_end`` is among the state's latest events (it is: the next stage starts right after it).
    """
    done: set[Key] = set()
    current = state.current_round
    for round_no in range(1, current):
        done.update((round_no, stage) for stage in (*PIPELINE_STAGES, "round_end"))
    if current >= 1 and state.current_stage in PIPELINE_STAGES:
        done.update((current, stage) for stage in PIPELINE_STAGES[: PIPELINE_STAGES.index(state.current_stage)])
    for record in state.recent_events:
        if record.get("event_type") == "stage_end" and record.get("level") == "success":
            done.add((int(record["round"]), str(record["stage"])))
    return done


def next_stage(done: set[Key]) -> Key:
    """The first (round, stage) of the pipeline that ``done`` does not hold: where a resume continues."""
    round_no = 1
    while True:
        for stage in PIPELINE_STAGES:
            if (round_no, stage) not in done:
                return round_no, stage
        round_no += 1


def previous_stage(key: Key) -> Key | None:
    """The (round, stage) that runs right before ``key`` (the last stage of the round before it for a
    round's first stage); ``None`` before the run's first stage."""
    round_no, stage = key
    index = PIPELINE_STAGES.index(stage)
    if index > 0:
        return round_no, PIPELINE_STAGES[index - 1]
    return (round_no - 1, PIPELINE_STAGES[-1]) if round_no > 1 else None
