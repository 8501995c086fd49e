"""The persister: the single writer of a run's ``events.jsonl``, ``metrics.jsonl``, ``state.json`` and
``ledger.json``.

Invariants: an event is appended before it is published (the broker calls :meth:`Persister.append_events`
first); ``state.json`` and the ledger are replaced atomically, at least once a second while anything
changes and at every boundary; the event log rotates at a size limit keeping N generations, and the
ledger (what every event counted) is saved before a generation can be deleted, so the run's totals never
depend on which generations remain; a torn last line left by a kill -9 is cut off on the next open;
every file is 0600, and every rename is followed by an fsync of the folder.

The loop never waits on the disk for ``state.json`` and the ledger: it serialises them (the snapshot is the
state at that instant) and hands the bytes to a thread (:class:`~heidi_engine.bus.storage.AtomicWriter`)
that fsyncs the events they count, then replaces each file atomically. Only a rotation (the ledger on disk
before a generation goes), :meth:`Persister.write_state` and :meth:`Persister.close` wait for it, and a
run's first save is written at once: its files tell of the run before its start is answered.

Write errors (a full disk) leave every file valid and are raised for the broker to handle: events that
did not reach the disk are reported by :class:`PersistError` so that none is taken as written; metric
lines that could not be written wait in a bounded buffer and go out with the next successful write. A
failed write of ``state.json`` (or the ledger) is tried again each second whether or not the state
changed since, and until one succeeds every check raises its error again (:class:`StateBehind`): a write
skipped because a second has not passed, or handed to the writer and not yet done, does not make the files
current. The writer's outcome is learned at the next check.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson

from heidi_engine.bus.journal import CONFIG_FILE, EVENTS_FILE, METRICS_FILE, STATE_FILE, repair_torn_tail
from heidi_engine.bus.ledger import LEDGER_FILE, Ledger, LogPosition, file_head, load_ledger
from heidi_engine.bus.state import RunState
from heidi_engine.bus.storage import (
    AtomicWriter,
    Replacement,
    atomic_write_bytes,
    atomic_write_json,
    ensure_private_dir,
    fsync_dir,
    json_bytes,
    open_private_append,
    replace_files,
)

STATE_INTERVAL_S = 1.0
METRICS_BACKLOG = 10_000


class PersistError(OSError):
    """Writing events failed after the first ``written`` of them reached the disk."""

    def __init__(self, written: int, cause: OSError) -> None:
        super().__init__(cause.errno, cause.strerror or str(cause))
        self.written = written
        self.cause = cause


class StateBehind(OSError):
    """``state.json`` (or the ledger) is behind: its last write failed, and no write succeeded since."""

    def __init__(self, cause: OSError) -> None:
        super().__init__(cause.errno, cause.strerror or str(cause))


# One encoder for every line: json.dumps with options builds a new encoder per call.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def _dumps(record: dict[str, Any]) -> bytes:
    return _ENCODER.encode(record).encode() + b"\n"


def _event_line(record: dict[str, Any]) -> bytes:
    """An event record's line: the same JSON values as :func:`_dumps` at a tenth of the cost (orjson),
    or :func:`_dumps` itself for what orjson refuses (a lone surrogate)."""
    try:
        return orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)
    except orjson.JSONEncodeError:
        return _dumps(record)


class Persister:
    """Writes one run's files. Not thread-safe: the broker's loop is its only caller; its writer gets bytes."""

    def __init__(
        self,
        run_dir: Path,
        *,
        max_bytes: int,
        retention: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.run_dir = ensure_private_dir(run_dir)
        self.max_bytes = max_bytes
        self.retention = retention
        self.clock = clock
        self.repaired: dict[str, int] = {}
        for name in (EVENTS_FILE, METRICS_FILE):
            cut = repair_torn_tail(self.run_dir / name)
            if cut:
                self.repaired[name] = cut
        # Whatever a previous supervisor wrote after its last save is counted again here, from the log.
        self.ledger: Ledger = load_ledger(self.run_dir)
        self._events_fd = open_private_append(self.run_dir / EVENTS_FILE)
        self._events_size = os.fstat(self._events_fd).st_size
        self._events_ino = os.fstat(self._events_fd).st_ino
        self._events_head = file_head(self.run_dir / EVENTS_FILE)
        self._metrics_fd = open_private_append(self.run_dir / METRICS_FILE)
        self._metrics_size = os.fstat(self._metrics_fd).st_size
        self._metrics_backlog: deque[bytes] = deque(maxlen=METRICS_BACKLOG)
        self.metrics_dropped = 0
        self._dirty = False
        self._due = False  # a boundary: the next check hands the state over whatever the second
        self._last_state_write = float("-inf")
        self._state_error: OSError | None = None  # the last state write's failure, until one succeeds
        self._state_on_disk = False  # until a save succeeds, saves are written at once
        self._writer = AtomicWriter(f"state-writer:{self.run_dir.name}")
        weakref.finalize(self, self._writer.stop)  # a persister dropped unclosed leaves no thread waiting
        self.rotations = 0

    @classmethod
    def sized(cls, run_dir: Path, max_size_mb: float, retention: int) -> Persister:
        """A persister rotating at ``max_size_mb`` (EVENT_LOG_MAX_SIZE_MB; at least 1 KiB) keeping
        ``retention`` generations (EVENT_LOG_RETENTION)."""
        return cls(run_dir, max_bytes=max(1024, int(max_size_mb * 1024 * 1024)), retention=retention)

    # -- events ------------------------------------------------------------------------------------

    def append_events(self, records: Sequence[dict[str, Any]]) -> None:
        """Append event records (one write per chunk), rotating when the file reaches the limit.

        Raises :class:`PersistError` naming how many records reached the disk before a write failed.
        """
        if not records:
            return
        written = 0
        chunk = bytearray()
        first = 0
        try:
            for index, record in enumerate(records):
                line = _event_line(record)
                if chunk and self._events_size + len(chunk) + len(line) > self.max_bytes:
                    self._write_events(bytes(chunk), records[first:index])
                    written, first = index, index
                    chunk.clear()
                chunk += line
            self._write_events(bytes(chunk), records[first:])
        except OSError as exc:
            raise PersistError(written, exc) from exc
        finally:
            self._dirty = True

    def _write_events(self, data: bytes, records: Sequence[dict[str, Any]]) -> None:
        if self._events_size > 0 and self._events_size + len(data) > self.max_bytes:
            self._rotate()
        try:
            _write_all(self._events_fd, data)
        except OSError:
            # A full disk must not leave half a line that the next write would glue onto.
            with contextlib.suppress(OSError):
                os.ftruncate(self._events_fd, self._events_size)
            raise
        if self._events_size == 0:
            self._events_head = file_head(self.run_dir / EVENTS_FILE)
        self._events_size += len(data)
        self.ledger.add_many(records)

    def _position(self) -> LogPosition:
        return LogPosition(inode=self._events_ino, head=self._events_head, offset=self._events_size)

    def _save_ledger(self) -> None:
        self.ledger.position = self._position()
        self.ledger.save(self.run_dir)

    def _rotate(self) -> None:
        self._writer.settle()  # its saves name this file's descriptor, and no older ledger may land later
        os.fsync(self._events_fd)
        # Before any generation can go: the ledger covers the whole current file.
        self._save_ledger()
        base = self.run_dir / EVENTS_FILE
        oldest = Path(f"{base}.{self.retention}")
        if oldest.exists():
            oldest.unlink()
        for gen in range(self.retention - 1, 0, -1):
            src = Path(f"{base}.{gen}")
            if src.exists():
                os.replace(src, f"{base}.{gen + 1}")
        os.replace(base, f"{base}.1")
        try:
            fd = open_private_append(base)
        except OSError:
            # Not even a new file fits: put the full one back and the generations where they were, so the
            # log keeps one current file and its generations no gap (a gap reads as generations deleted).
            with contextlib.suppress(OSError):
                os.replace(f"{base}.1", base)
                for gen in range(1, self.retention):
                    if Path(f"{base}.{gen + 1}").exists():
                        os.replace(f"{base}.{gen + 1}", f"{base}.{gen}")
            raise
        os.close(self._events_fd)
        self._events_fd = fd
        fsync_dir(self.run_dir)
        self._events_size = 0
        self._events_ino = os.fstat(self._events_fd).st_ino
        self._events_head = ""
        self.rotations += 1
        self._save_ledger()

    # -- samples -----------------------------------------------------------------------------------

    def append_metric(self, record: dict[str, Any]) -> None:
        """Append one gauge sample to ``metrics.jsonl``; on a write error it waits in a bounded buffer
        (the oldest dropped and counted beyond :data:`METRICS_BACKLOG`) and the error is raised."""
        if len(self._metrics_backlog) == self._metrics_backlog.maxlen:
            self.metrics_dropped += 1
        self._metrics_backlog.append(_dumps(record))
        self.flush_metrics()

    def flush_metrics(self) -> None:
        """Write the buffered metric lines; raises the write error and keeps them when it fails."""
        if not self._metrics_backlog:
            return
        data = b"".join(self._metrics_backlog)
        try:
            _write_all(self._metrics_fd, data)
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(self._metrics_fd, self._metrics_size)
            raise
        self._metrics_size += len(data)
        self._metrics_backlog.clear()

    def truncate_metrics_from(self, round_no: int, step: int, source: str = "") -> None:
        """Drop ``source``'s trainer samples of ``round_no`` at ``step`` or later (a resumed trainer replays
        them); another source's stay."""
        path = self.run_dir / METRICS_FILE
        kept = bytearray()
        dropped = False
        with open(path, "rb") as handle:
            for line in handle:
                try:
                    obj = json.loads(line)
                except ValueError:
                    dropped = True
                    continue
                if (obj.get("type") == "trainer" and obj.get("round") == round_no and obj.get("step", 0) >= step
                        and obj.get("source", "") == source):
                    dropped = True
                    continue
                kept += line
        if dropped:
            atomic_write_bytes(path, bytes(kept))
            os.close(self._metrics_fd)
            self._metrics_fd = open_private_append(path)
            self._metrics_size = len(kept)

    # -- state -------------------------------------------------------------------------------------

    def mark_dirty(self) -> None:
        """Something in the state changed; it will be written within a second."""
        self._dirty = True

    def mark_boundary(self) -> None:
        """A stage boundary or a status change: the next check hands the state over at once."""
        self._due = True

    def maybe_write_state(self, state: RunState) -> bool:
        """Hand ``state.json`` and the ledger to the writer at a boundary, or once a second while they changed
        or the last write failed (until a save succeeded, it writes them itself); returns whether it did.
        Raises :class:`StateBehind` while the newest write done failed and none succeeded since."""
        self._state_error = self._writer.outcome(self._state_error)
        failed = self._state_error
        handed = self._due or (
            (self._dirty or failed is not None) and self.clock() - self._last_state_write >= STATE_INTERVAL_S)
        if handed and not self._state_on_disk:
            self.write_state(state)  # raises its own error
            return True
        if handed:
            self._last_state_write = self.clock()
            self._writer.submit(self._snapshot(state))
            self._dirty = self._due = False
        if failed is not None:
            raise StateBehind(failed)
        return handed

    def write_state(self, state: RunState) -> None:
        """Write ``state.json`` and the ledger now (close, tools), dropping the older save the writer holds."""
        self._writer.settle(drop=True)
        self._state_error = self._writer.outcome(self._state_error)
        self._last_state_write = self.clock()
        try:
            replace_files(self._snapshot(state))
        except OSError as exc:
            self._state_error = exc
            raise
        self._state_error = None
        self._state_on_disk = True
        self._dirty = self._due = False

    def flush(self) -> None:
        """Wait until every save handed to the writer is written (its outcome is learned at the next check)."""
        self._writer.settle()

    def _snapshot(self, state: RunState) -> Replacement:
        self.ledger.position = self._position()
        files = ((self.run_dir / STATE_FILE, json_bytes(state.model_dump(mode="json"))),
                 (self.run_dir / LEDGER_FILE, self.ledger.to_bytes()))
        return Replacement(files, synced=self._events_fd)  # the events the ledger counts made durable first

    def write_config(self, config: dict[str, Any]) -> None:
        """The effective configuration of the run, secrets redacted."""
        atomic_write_json(self.run_dir / CONFIG_FILE, config)

    def close(self, state: RunState | None = None) -> None:
        """Join the writer, write the final state (if given), fsync and close; every step is tried regardless."""
        try:
            self._writer.close(drop=state is not None)
            if state is not None:
                self.write_state(state)
            self.flush_metrics()
        finally:
            for fd in (self._events_fd, self._metrics_fd):
                with contextlib.suppress(OSError):
                    os.fsync(fd)
                with contextlib.suppress(OSError):
                    os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]
