"""Training samples on disk: the sample record and the JSONL files of the data pipeline.

Each round's data lives in ``runs/<id>/data/round_N/`` (its paths: :class:`~heidi_engine.agents.layout.RoundFiles`).
Generate appends one line to ``raw.jsonl`` per sample as its reply arrives (and keeps its resume ledger
beside it: ``failed.jsonl`` for requests that failed for good, ``proposed.jsonl`` for self-instruct
tasks, ``requests.jsonl`` for every teacher request, written before it is sent); validate rewrites
``clean.jsonl``, ``tested.jsonl``, ``train.jsonl`` and ``val.jsonl`` whole, atomically. An appender cuts a
torn last line (a writer killed mid-line) off before writing, so a kill -9 never leaves a file that breaks
the next reader. Files are created 0600 and folders 0700 whatever the umask
(:mod:`heidi_engine.bus.storage`).

One JSONL reader per policy: :func:`read_jsonl_skipping_bad` skips a torn last line and every line that
is not a JSON object (the data pipeline's files, which a killed writer may have cut);
:func:`read_jsonl_strict` refuses them (a stage's input that must be whole).

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

from heidi_engine.agents.runtime import FatalStageError
from heidi_engine.bus.journal import repair_torn_tail
from heidi_engine.bus.ledger import load_ledger
from heidi_engine.bus.storage import atomic_write_bytes, open_private_append

__all__ = [
    "SAMPLE_ID_PATTERN",
    "Counted",
    "JsonlAppender",
    "Sample",
    "SampleMetadata",
    "already_counted",
    "read_jsonl_skipping_bad",
    "read_jsonl_strict",
    "sample_id",
    "write_jsonl",
]

log = logging.getLogger(__name__)

SAMPLE_ID_PATTERN = r"^r\d+-\d{5,}$"


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


def _line(row: Mapping[str, Any]) -> bytes:
    # ensure_ascii=False keeps code readable; readers split on b"\n" only, never on U+2028.
    return (json.dumps(row, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")


def read_jsonl_strict(path: Path) -> list[dict[str, Any]]:
    """The JSON objects of ``path``, one per non-blank line, for a stage that cannot go on without all of
    them: a missing or unreadable file, or a line that is not a JSON object, is a
    :class:`~heidi_engine.agents.runtime.FatalStageError` that names it."""
    rows: list[dict[str, Any]] = []
    try:
        with open(path, encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except ValueError as exc:
                    raise FatalStageError(f"{path.name} line {number}: not valid JSON ({exc})") from None
                if not isinstance(row, dict):
                    raise FatalStageError(f"{path.name} line {number}: expected a JSON object")
                rows.append(row)
    except OSError as exc:
        raise FatalStageError(f"cannot read {path}: {exc}") from None
    return rows


def read_jsonl_skipping_bad(path: Path) -> list[dict[str, Any]]:
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
    """Replace ``path`` with ``rows`` atomically (:func:`~heidi_engine.bus.storage.atomic_write_bytes`:
    temp file, fsync, rename, mode 0600); returns the row count."""
    lines = [_line(row) for row in rows]
    atomic_write_bytes(path, b"".join(lines))
    return len(lines)


class JsonlAppender:
    """Appends rows to one JSONL file, each line written whole and synced before :meth:`append` returns.

    Opening cuts off a torn last line first, so that the next row does not glue onto it.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        removed = repair_torn_tail(self.path)
        if removed:
            log.warning("%s: removed a torn last line (%d bytes)", self.path, removed)
        self._fd = open_private_append(self.path)

    def append(self, row: Mapping[str, Any], *, sync: bool = True) -> None:
        """Write ``row`` as one line; with ``sync``, flushed to the disk before returning (else see
        :meth:`sync`). The caller serialises appends from several threads."""
        data = memoryview(_line(row))
        while data:
            written = os.write(self._fd, data)
            data = data[written:]
        if sync:
            # A row on disk is never requested again on resume, so it must really be on disk.
            os.fsync(self._fd)

    def sync(self) -> None:
        """Flush what was appended to the disk (safe beside appends from other threads)."""
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
