"""Reading a run's files: ``events.jsonl`` with its rotated generations, ``metrics.jsonl`` and ``state.json``.

Readers follow rotation (oldest generation first), skip a torn or invalid line instead of failing, and
rebuild a run's state offline with the same reducer the supervisor uses.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

from pydantic import TypeAdapter, ValidationError

from heidi_engine.bus.event import Event
from heidi_engine.bus.state import (
    EvalSample,
    RunState,
    SystemSample,
    TrainerSample,
    apply_event,
    apply_sample,
)

EVENTS_FILE = "events.jsonl"
METRICS_FILE = "metrics.jsonl"
STATE_FILE = "state.json"
CONFIG_FILE = "config.json"

_SAMPLE = TypeAdapter(TrainerSample | SystemSample | EvalSample)


def event_files(run_dir: str | os.PathLike[str]) -> list[Path]:
    """The event log's generations, oldest first: ``events.jsonl.N`` … ``.1``, then ``events.jsonl``."""
    folder = Path(run_dir)
    rotated = []
    for path in folder.glob(EVENTS_FILE + ".*"):
        suffix = path.name[len(EVENTS_FILE) + 1:]
        if suffix.isdigit():
            rotated.append((int(suffix), path))
    files = [p for _, p in sorted(rotated, reverse=True)]
    current = folder / EVENTS_FILE
    if current.exists():
        files.append(current)
    return files


def iter_lines(path: Path) -> Iterator[bytes]:
    """Complete lines of ``path``; a last line without its newline (torn by a kill) is not yielded."""
    try:
        with open(path, "rb") as handle:
            for line in handle:
                if line.endswith(b"\n"):
                    yield line
    except FileNotFoundError:
        return


def read_events(run_dir: str | os.PathLike[str], *, skipped: list[str] | None = None) -> Iterator[Event]:
    """Every valid event of the run in order; invalid lines are skipped (and named in ``skipped``)."""
    for path in event_files(run_dir):
        for number, line in enumerate(iter_lines(path), 1):
            try:
                yield Event.model_validate(json.loads(line))
            except (ValueError, ValidationError):
                if skipped is not None:
                    skipped.append(f"{path.name}:{number}")


def read_samples(run_dir: str | os.PathLike[str]) -> Iterator[TrainerSample | SystemSample | EvalSample]:
    """Every valid sample in ``metrics.jsonl``."""
    for line in iter_lines(Path(run_dir) / METRICS_FILE):
        try:
            yield _SAMPLE.validate_python(json.loads(line))
        except (ValueError, ValidationError):
            continue


def repair_torn_tail(path: str | os.PathLike[str]) -> int:
    """Cut a trailing partial line (no newline) off ``path``; returns the bytes removed."""
    target = Path(path)
    try:
        size = target.stat().st_size
    except FileNotFoundError:
        return 0
    if size == 0:
        return 0
    with open(target, "rb+") as handle:
        handle.seek(size - 1)
        if handle.read(1) == b"\n":
            return 0
        # Walk back to the last newline in blocks; a file with none is all torn.
        pos = size
        keep = 0
        while pos > 0:
            step = min(65536, pos)
            pos -= step
            handle.seek(pos)
            block = handle.read(step)
            idx = block.rfind(b"\n")
            if idx >= 0:
                keep = pos + idx + 1
                break
        handle.truncate(keep)
        handle.flush()
        os.fsync(handle.fileno())
        return size - keep


def load_state_file(run_dir: str | os.PathLike[str]) -> RunState | None:
    """``state.json`` of a run, or ``None`` when it is missing or unreadable."""
    try:
        return RunState.model_validate_json((Path(run_dir) / STATE_FILE).read_bytes())
    except (OSError, ValueError, ValidationError):
        return None


def replay(run_dir: str | os.PathLike[str]) -> RunState:
    """Rebuild a finished run's state from its files alone (no supervisor needed).

    Counters and usage come from the events, gauges from ``metrics.jsonl``; status, flags and config
    come from ``state.json`` when it exists, since no event carries them.
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
    for event in read_events(run_dir):
        apply_event(state, event)
    for sample in read_samples(run_dir):
        if isinstance(sample, (TrainerSample, EvalSample)):
            apply_sample(state, sample)
    if saved is not None:
        state.status = saved.status
        state.stop_requested, state.pause_requested = saved.stop_requested, saved.pause_requested
        state.gpus, state.host, state.gpu_message = saved.gpus, saved.host, saved.gpu_message
    return state
