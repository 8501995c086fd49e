"""Training samples on disk: the sample record and the per-round JSONL files of the data pipeline.

Each round's data lives in ``runs/<id>/data/round_N/``. Generate appends one line to ``raw.jsonl`` per
sample as its reply arrives (and keeps its resume ledger beside it: ``failed.jsonl`` for requests that
failed for good, ``proposed.jsonl`` for self-instruct tasks); validate rewrites ``clean.jsonl``,
``tested.jsonl``, ``train.jsonl`` and ``val.jsonl`` whole, atomically. Readers skip a torn last line
(a writer killed mid-line) and an appender cuts it off before writing, so a kill -9 never leaves a file
that breaks the next reader. Files are created 0600 and folders 0700 whatever the umask.

A resumed stage recomputes what its files hold and reports only what the run's ``events.jsonl`` has not
counted yet (:func:`already_counted`), so counters are never counted twice.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from heidi_engine.bus.journal import repair_torn_tail
from heidi_engine.bus.ledger import load_ledger

__all__ = [
    "SAMPLE_ID_PATTERN",
    "Counted",
    "JsonlAppender",
    "RoundFiles",
    "Sample",
    "SampleMetadata",
    "already_counted",
    "read_jsonl",
    "sample_id",
    "write_jsonl",
]

log = logging.getLogger(__name__)

SAMPLE_ID_PATTERN = r"^r\d+-\d{5,}$"
_FILE_MODE = 0o600
_DIR_MODE = 0o700


def sample_id(round_no: int, index: int) -> str:
    """The deterministic id of the ``index``-th sample of round ``round_no``: ``r1-00007``."""
    return f"r{round_no}-{index:05d}"


class SampleMetadata(BaseModel):
    """Where a sample came from. ``secret_kinds`` lists the kinds of secret redacted out of the reply."""

    model_config = ConfigDict(extra="allow", frozen=True, strict=True)

    task_id: str = Field(min_length=1)
    entry_point: str = Field(min_length=1)
    round: int = Field(ge=0)
    teacher_model: str = Field(min_length=1)
    usage: dict[str, int]
    ts: str = Field(min_length=1)
    finish_reason: str | None = None
    secret_kinds: list[str] = Field(default_factory=list)


class Sample(BaseModel):
    """One training sample, exactly as a line of ``raw.jsonl`` (and of the files validate derives)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    id: str = Field(pattern=SAMPLE_ID_PATTERN)
    instruction: str
    input: str
    output: str
    tests: str
    metadata: SampleMetadata

    def record(self) -> dict[str, Any]:
        """The JSON object written to disk (``secret_kinds`` only when a secret was found)."""
        data = self.model_dump(mode="json")
        if not data["metadata"]["secret_kinds"]:
            del data["metadata"]["secret_kinds"]
        return data


@dataclass(frozen=True)
class RoundFiles:
    """The data files of one round."""

    folder: Path

    @classmethod
    def of(cls, run_dir: Path, round_no: int) -> RoundFiles:
        return cls(Path(run_dir) / "data" / f"round_{round_no}")

    def ensure(self) -> RoundFiles:
        """Create the folder (and ``data/``) with mode 0700."""
        for folder in (self.folder.parent, self.folder):
            folder.mkdir(mode=_DIR_MODE, exist_ok=True)
        return self

    @property
    def raw(self) -> Path:
        return self.folder / "raw.jsonl"

    @property
    def failed(self) -> Path:
        return self.folder / "failed.jsonl"

    @property
    def proposed(self) -> Path:
        return self.folder / "proposed.jsonl"

    @property
    def clean(self) -> Path:
        return self.folder / "clean.jsonl"

    @property
    def tested(self) -> Path:
        return self.folder / "tested.jsonl"

    @property
    def train(self) -> Path:
        return self.folder / "train.jsonl"

    @property
    def val(self) -> Path:
        return self.folder / "val.jsonl"


def _line(row: Mapping[str, Any]) -> bytes:
    # ensure_ascii=False keeps code readable; readers split on b"\n" only, never on U+2028.
    return (json.dumps(row, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The JSON objects of ``path``, in order; [] when it does not exist.

    A last line without its newline is torn (its writer died mid-line) and is skipped, as are lines
    that are not JSON objects (each logged with its line number).
    """
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return []
    lines = data.split(b"\n")
    if lines and lines[-1]:
        log.warning("%s: skipping a torn last line (%d bytes)", path, len(lines[-1]))
    rows: list[dict[str, Any]] = []
    for number, line in enumerate(lines[:-1], start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError as exc:
            log.warning("%s:%d: skipping a line that is not JSON: %s", path, number, exc)
            continue
        if not isinstance(obj, dict):
            log.warning("%s:%d: skipping a line that is not a JSON object", path, number)
            continue
        rows.append(obj)
    return rows


def write_jsonl(path: Path, rows: Iterable[Mapping[str, Any]]) -> int:
    """Replace ``path`` with ``rows`` atomically (temp file, fsync, rename); returns the row count."""
    target = Path(path)
    temp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    count = 0
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, _FILE_MODE)
    try:
        os.fchmod(fd, _FILE_MODE)
        with os.fdopen(fd, "wb", closefd=False) as handle:
            for row in rows:
                handle.write(_line(row))
                count += 1
            handle.flush()
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        temp.unlink(missing_ok=True)
        raise
    os.close(fd)
    os.replace(temp, target)
    dir_fd = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return count


class JsonlAppender:
    """Appends rows to one JSONL file, each line written whole and synced before :meth:`append` returns.

    Opening cuts off a torn last line first, so that the next row does not glue onto it.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        removed = repair_torn_tail(self.path)
        if removed:
            log.warning("%s: removed a torn last line (%d bytes)", self.path, removed)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, _FILE_MODE)
        os.fchmod(self._fd, _FILE_MODE)

    def append(self, row: Mapping[str, Any]) -> None:
        data = memoryview(_line(row))
        while data:
            written = os.write(self._fd, data)
            data = data[written:]
        # A row on disk is never requested again on resume, so it must really be on disk.
        os.fsync(self._fd)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> JsonlAppender:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


@dataclass(frozen=True)
class Counted:
    """What the run's events already counted for one stage: in one round, and its cost over all rounds."""

    counters: dict[str, int]
    usage: dict[str, float]
    run_cost: float


def already_counted(run_dir: Path, stage: str, round_no: int) -> Counted:
    """What the supervisor recorded for ``stage``: counters and usage of round ``round_no``, and the
    known estimated cost of every round (an unknown, null cost adds nothing). Read from the run's ledger
    and the events after it, so it holds however many log generations rotation has deleted."""
    ledger = load_ledger(run_dir)
    totals = ledger.totals(stage, round_no)
    return Counted(dict(totals.counters), dict(totals.usage), ledger.stage_cost(stage))
