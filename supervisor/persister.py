"""The persister: the single writer of a run's ``events.jsonl``, ``metrics.jsonl`` and ``state.json``.

Invariants (DESIGN §6): an event is appended before it is published (the broker calls
:meth:`Persister.append_events` first); ``state.json`` is replaced atomically, at least once a second
while anything changes and at every boundary; the event log rotates at a size limit keeping N
generations; a torn last line left by a kill -9 is cut off on the next open; every file is 0600.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from heidi_engine.bus.journal import CONFIG_FILE, EVENTS_FILE, METRICS_FILE, STATE_FILE, repair_torn_tail
from heidi_engine.bus.state import RunState
from heidi_engine.bus.storage import atomic_write_json, ensure_private_dir, open_private_append

STATE_INTERVAL_S = 1.0


def _dumps(record: dict[str, Any]) -> bytes:
    return json.dumps(record, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


class Persister:
    """Writes one run's files. Not thread-safe: the broker's loop is its only caller."""

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
        self._events_fd = open_private_append(self.run_dir / EVENTS_FILE)
        self._events_size = os.fstat(self._events_fd).st_size
        self._metrics_fd = open_private_append(self.run_dir / METRICS_FILE)
        self._dirty = False
        self._last_state_write = float("-inf")
        self.rotations = 0

    # -- events ------------------------------------------------------------------------------------

    def append_events(self, records: Sequence[dict[str, Any]]) -> None:
        """Append event records (one write per record batch), rotating when the file reaches the limit."""
        if not records:
            return
        chunk = bytearray()
        for record in records:
            line = _dumps(record)
            if chunk and self._events_size + len(chunk) + len(line) > self.max_bytes:
                self._write_events(bytes(chunk))
                chunk.clear()
            chunk += line
        self._write_events(bytes(chunk))
        self._dirty = True

    def _write_events(self, data: bytes) -> None:
        if self._events_size > 0 and self._events_size + len(data) > self.max_bytes:
            self._rotate()
        try:
            _write_all(self._events_fd, data)
        except OSError:
            # A full disk must not leave half a line that the next write would glue onto.
            os.ftruncate(self._events_fd, self._events_size)
            raise
        self._events_size += len(data)

    def _rotate(self) -> None:
        os.close(self._events_fd)
        base = self.run_dir / EVENTS_FILE
        oldest = Path(f"{base}.{self.retention}")
        if oldest.exists():
            oldest.unlink()
        for gen in range(self.retention - 1, 0, -1):
            src = Path(f"{base}.{gen}")
            if src.exists():
                os.replace(src, f"{base}.{gen + 1}")
        os.replace(base, f"{base}.1")
        self._events_fd = open_private_append(base)
        self._events_size = 0
        self.rotations += 1

    # -- samples -----------------------------------------------------------------------------------

    def append_metric(self, record: dict[str, Any]) -> None:
        """Append one gauge sample to ``metrics.jsonl``."""
        _write_all(self._metrics_fd, _dumps(record))

    def truncate_metrics_from(self, round_no: int, step: int) -> None:
        """Drop trainer samples of ``round_no`` at ``step`` or later (a resumed trainer replays them)."""
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
                if obj.get("type") == "trainer" and obj.get("round") == round_no and obj.get("step", 0) >= step:
                    dropped = True
                    continue
                kept += line
        if dropped:
            os.close(self._metrics_fd)
            tmp = path.with_suffix(".jsonl.tmp")
            fd = open_private_append(tmp)
            _write_all(fd, bytes(kept))
            os.fsync(fd)
            os.close(fd)
            os.replace(tmp, path)
            self._metrics_fd = open_private_append(path)

    # -- state -------------------------------------------------------------------------------------

    def mark_dirty(self) -> None:
        """Something in the state changed; it will be written within a second."""
        self._dirty = True

    def maybe_write_state(self, state: RunState) -> bool:
        """Write ``state.json`` if it changed and the last write is a second old."""
        if self._dirty and self.clock() - self._last_state_write >= STATE_INTERVAL_S:
            self.write_state(state)
            return True
        return False

    def write_state(self, state: RunState) -> None:
        """Write ``state.json`` now (stage boundaries, status changes, shutdown)."""
        os.fsync(self._events_fd)
        atomic_write_json(self.run_dir / STATE_FILE, state.model_dump(mode="json"))
        self._dirty = False
        self._last_state_write = self.clock()

    def write_config(self, config: dict[str, Any]) -> None:
        """The effective configuration of the run, secrets redacted."""
        atomic_write_json(self.run_dir / CONFIG_FILE, config)

    def close(self, state: RunState | None = None) -> None:
        """Final state write (if given), fsync and close."""
        if state is not None:
            self.write_state(state)
        for fd in (self._events_fd, self._metrics_fd):
            try:
                os.fsync(fd)
                os.close(fd)
            except OSError:
                pass


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]
