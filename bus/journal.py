"""Reading a run's files: ``events.jsonl`` with its rotated generations, ``metrics.jsonl`` and ``state.json``.

Readers follow rotation (oldest generation first) and skip a torn or invalid line instead of failing.
What a run counted in total is in its ledger (:mod:`heidi_engine.bus.ledger`), not in these files, since
rotation deletes old generations; the readers here serve what follows the ledger (:class:`LogPosition`,
:func:`read_events_after`) and the latest lines.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from heidi_engine.bus.event import Event
from heidi_engine.bus.state import EvalSample, RunState, SystemSample, TrainerSample

EVENTS_FILE = "events.jsonl"
METRICS_FILE = "metrics.jsonl"
STATE_FILE = "state.json"
CONFIG_FILE = "config.json"
_HEAD_MAX = 64 * 1024

log = logging.getLogger(__name__)

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


def log_is_whole(run_dir: str | os.PathLike[str]) -> bool:
    """Whether the event files still hold every event that counted anything or completed a stage.

    Rotation renames the current file to ``.1`` (shifting the others up) and deletes only the oldest
    generation, so the log lost nothing when no generation exists, or when the generations are numbered
    1..N without a gap and the oldest starts with a ``pipeline_start`` of round 0: the run's first event,
    or a resume before any round began (everything before it was the supervisor's own round-0 events,
    which count nothing). Anything else (the oldest generation starts mid-run, a gap, an unreadable first
    line) means generations were deleted.
    """
    folder = Path(run_dir)
    numbers = sorted(
        int(path.name[len(EVENTS_FILE) + 1:]) for path in folder.glob(EVENTS_FILE + ".*")
        if path.name[len(EVENTS_FILE) + 1:].isdigit()
    )
    if not numbers:
        return True
    if numbers != list(range(1, len(numbers) + 1)):
        return False
    first = next(iter_lines(folder / f"{EVENTS_FILE}.{numbers[-1]}"), None)
    try:
        record = json.loads(first) if first is not None else None
    except ValueError:
        return False
    return isinstance(record, dict) and record.get("event_type") == "pipeline_start" and record.get("round") == 0


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


def blocks_reversed(path: Path, block: int = 65536) -> Iterator[bytes]:
    """The complete lines of ``path`` from its end, a block at a time: each chunk is whole lines (each
    ending in its newline) in file order, and precedes the chunk yielded before it; a torn last line is
    not among them. A caller counting lines need not split them: the cost is what it consumes."""
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed by the with below
    except FileNotFoundError:
        return
    with handle:
        pos = handle.seek(0, os.SEEK_END)
        rest = b""  # the end of a line that starts before the block being read
        past_end = False  # the part after the file's last newline (empty, or torn) has been dropped
        while pos > 0:
            step = min(block, pos)
            pos -= step
            handle.seek(pos)
            data = handle.read(step) + rest
            rest = b""
            if not past_end:
                last = data.rfind(b"\n")
                if last < 0:
                    continue  # all of it is the torn last line
                data, past_end = data[: last + 1], True
            if pos == 0:
                if data:
                    yield data
                return
            first = data.find(b"\n") + 1
            if first == 0:
                rest = data  # the middle of one line longer than a block
                continue
            rest = data[:first]
            if first < len(data):
                yield data[first:]


def iter_lines_reversed(path: Path, block: int = 65536) -> Iterator[bytes]:
    """Complete lines of ``path`` from the last to the first, read backwards in blocks (a torn last
    line is not yielded): the cost is what the caller consumes, not the file's size."""
    for chunk in blocks_reversed(path, block):
        for line in reversed(chunk.split(b"\n")[:-1]):
            yield line + b"\n"


def tail_records(run_dir: str | os.PathLike[str], count: int) -> list[dict[str, Any]]:
    """The last ``count`` valid event records of the run, oldest first, across generations."""
    found: list[dict[str, Any]] = []
    for path in reversed(event_files(run_dir)):
        for line in iter_lines_reversed(path):
            if len(found) >= count:
                break
            try:
                found.append(Event.model_validate(json.loads(line), context={"redacted": True}).to_record())
            except (ValueError, ValidationError):
                continue
        if len(found) >= count:
            break
    found.reverse()
    return found


def latest_trainer_samples(run_dir: str | os.PathLike[str], count: int) -> list[TrainerSample]:
    """Up to ``count`` trainer samples of the latest round in ``metrics.jsonl``, oldest first."""
    found: list[TrainerSample] = []
    for line in iter_lines_reversed(Path(run_dir) / METRICS_FILE):
        if len(found) >= count:
            break
        if b'"trainer"' not in line:
            continue
        try:
            sample = _SAMPLE.validate_python(json.loads(line))
        except (ValueError, ValidationError):
            continue
        if isinstance(sample, TrainerSample):
            if found and sample.round != found[0].round:
                break
            found.append(sample)
    found.reverse()
    return found


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


class LogPosition(BaseModel):
    """A point in the event log: ``offset`` bytes into the file with this inode and first-line digest."""

    model_config = ConfigDict(extra="forbid")

    inode: int = Field(ge=0)
    head: str = ""  # sha256 of the file's first line; "" while the file was empty
    offset: int = Field(ge=0)


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
