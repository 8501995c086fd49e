"""state.json and the ledger written off the loop: the snapshot of the save call, the newest save only, a
full disk reported as before, the ledger on disk before a rotation deletes, nothing lost or left at close."""

from __future__ import annotations

import errno
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from heidi_engine.bus import storage
from heidi_engine.bus.ledger import LEDGER_FILE, Ledger, load_ledger
from heidi_engine.bus.server import BusServer
from heidi_engine.bus.state import RunState
from heidi_engine.supervisor.current_run import CurrentRun
from heidi_engine.supervisor.health import Problems
from heidi_engine.supervisor.persister import Persister, StateBehind
from heidi_engine.supervisor.spool import Spool

RUN = "run_20240215_123456_abc12345"
FULL = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def record(i: int) -> dict[str, object]:
    return {"event_version": "1.0", "ts": "2024-02-15T12:34:56.789Z", "run_id": RUN, "round": 1, "stage": "generate",
            "level": "info", "event_type": "progress", "message": f"event {i:06d}", "counters_delta": {"teacher_generated": 1},
            "usage_delta": {}, "artifact_paths": []}


def writers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("state-writer:")]


@pytest.fixture(autouse=True)
def no_thread_left() -> Iterator[None]:
    before = set(writers())
    yield
    assert set(writers()) <= before


class Disk:
    """``storage.atomic_write_bytes`` that records each write and holds the writer's thread at a gate (the
    loop's own writes pass); ``fail`` makes every write raise."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.real = storage.atomic_write_bytes
        self.writes: list[tuple[str, bytes, str]] = []  # file, bytes, "writer" or "loop"
        self.entered = threading.Event()  # the writer is at the gate
        self.gate = threading.Event()
        self.gate.set()
        self.fail: OSError | None = None
        monkeypatch.setattr(storage, "atomic_write_bytes", self)

    def __call__(self, path: str | os.PathLike[str], data: bytes, **kwargs: Any) -> None:
        who = "writer" if threading.current_thread().name.startswith("state-writer:") else "loop"
        if who == "writer":
            self.entered.set()
            if not self.gate.wait(30):
                raise TimeoutError("the test never opened the gate")
        self.writes.append((Path(path).name, bytes(data), who))
        if self.fail is not None:
            raise self.fail
        self.real(path, data, **kwargs)

    def of(self, name: str) -> list[bytes]:
        return [data for file, data, _ in self.writes if file == name]


def opened(run_dir: Path, **kwargs: Any) -> Persister:
    """A persister past its run's first save (written at once; the writer takes the next ones)."""
    persister = Persister(run_dir, **{"max_bytes": 10**6, "retention": 3, **kwargs})
    persister.write_state(RunState(run_id=RUN, status="starting"))
    return persister


def on_disk(run_dir: Path) -> tuple[RunState, Ledger]:
    return (RunState.model_validate_json((run_dir / "state.json").read_bytes()),
            Ledger.model_validate_json((run_dir / LEDGER_FILE).read_bytes()))


def test_the_pair_written_off_the_loop_is_the_state_at_the_save_call(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    persister = opened(tmp_path)
    disk = Disk(monkeypatch)
    state = RunState(run_id=RUN, status="running", current_stage="generate")
    persister.append_events([record(i) for i in range(3)])
    disk.gate.clear()
    persister.mark_boundary()
    assert persister.maybe_write_state(state)
    assert disk.entered.wait(30)  # the writer holds the save; the loop goes on
    state.status, state.current_stage = "paused", "validate"
    persister.append_events([record(3), record(4)])
    disk.gate.set()
    persister.flush()
    saved, ledger = on_disk(tmp_path)
    assert (saved.status, saved.current_stage) == ("running", "generate")
    assert ledger.counters["teacher_generated"] == 3
    assert ledger.position is not None and ledger.position.offset < (tmp_path / "events.jsonl").stat().st_size
    assert [(file, who) for file, _, who in disk.writes] == [("state.json", "writer"), (LEDGER_FILE, "writer")]
    persister.close(state)
    saved, ledger = on_disk(tmp_path)
    assert saved.status == "paused" and ledger.counters["teacher_generated"] == 5


def test_a_busy_writer_writes_only_the_newest_save(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    persister = opened(tmp_path)
    disk = Disk(monkeypatch)
    state = RunState(run_id=RUN, status="running")
    disk.gate.clear()
    for stage in ("generate", "validate", "train", "eval"):
        state.current_stage = stage
        persister.mark_boundary()
        assert persister.maybe_write_state(state)  # handed over at once, the writer busy or not
        assert disk.entered.wait(30)  # the first is in the writer's hands; the others wait, one at a time
    disk.gate.set()
    persister.flush()
    stages = [RunState.model_validate_json(data).current_stage for data in disk.of("state.json")]
    assert stages == ["generate", "eval"]
    assert len(disk.of(LEDGER_FILE)) == 2
    persister.close()


def test_a_full_disk_met_by_the_writer_is_reported_as_before(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The write fails on the writer's thread: the loop learns it at its next check, shows it in the health
    until a write succeeds, and tries again each second whether or not anything changed."""
    now = [100.0]
    persister = opened(tmp_path, clock=lambda: now[0])
    disk = Disk(monkeypatch)
    problems = Problems()
    spool = Spool(persister, problems.report, clock=lambda: now[0])
    state = RunState(run_id=RUN, status="running")
    persister.append_events([record(0)])
    now[0] += 5
    disk.fail = FULL
    spool.write_state(state, unless_recent=True)
    assert problems.text is None  # handed over; the writer has not answered yet
    persister.flush()
    seen = []
    for _ in range(25):  # the loop asks every 100 ms
        now[0] += 0.1
        spool.write_state(state, unless_recent=True)
        persister.flush()
        seen.append(problems.text)
    assert all(text == "cannot write state.json: No space left on device" for text in seen), seen
    assert disk.of("state.json") and len(disk.of("state.json")) == 3  # the first, then once a second
    with pytest.raises(StateBehind) as behind:
        persister.maybe_write_state(state)
    assert behind.value.errno == errno.ENOSPC
    disk.fail = None
    now[0] += 1
    spool.write_state(state, unless_recent=True)  # handed over: not yet a success
    assert problems.text is not None
    persister.flush()
    now[0] += 0.1
    spool.write_state(state, unless_recent=True)  # the writer's success is learned here
    assert problems.text is None
    assert on_disk(tmp_path)[1].counters["teacher_generated"] == 1
    now[0] += 5
    assert not persister.maybe_write_state(state)  # nothing changed and nothing is behind
    persister.close()


def test_a_boundary_is_handed_over_at_once_and_the_loop_does_not_wait(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    disk = Disk(monkeypatch)
    now = [100.0]
    run = CurrentRun(cast(BusServer, None), lambda: now[0])
    persister = Persister(tmp_path, max_bytes=10**6, retention=3, clock=lambda: now[0])
    run.spool = Spool(persister, run.report_problem, clock=lambda: now[0])
    run.state = RunState(run_id=RUN, status="running", current_stage="generate")
    run._write_state()  # the run's first save: on disk when the call returns
    assert [who for _, _, who in disk.writes] == ["loop", "loop"]
    assert on_disk(tmp_path)[0].current_stage == "generate"
    disk.gate.clear()
    run.state.current_stage = "validate"
    now[0] += 0.1
    run._write_state()  # a boundary within the second: handed over though the writer may still be busy
    run.state.current_stage = "train"
    persister.mark_dirty()
    run._write_state(unless_recent=True)  # the once-a-second save: changed, but within the second
    disk.gate.set()
    persister.flush()
    assert on_disk(tmp_path)[0].current_stage == "validate"
    persister.close(run.state)
    assert on_disk(tmp_path)[0].current_stage == "train"


def test_rotation_deletes_a_file_only_after_the_ledger_counting_it_is_on_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each rotation comes while the writer holds an older save: it waits for it, then saves the ledger
    itself, so an older ledger never lands after it."""
    persister = opened(tmp_path, max_bytes=2048, retention=1)
    disk = Disk(monkeypatch)
    settle = persister._writer.settle

    def release_then_settle(*, drop: bool = False) -> None:
        disk.gate.set()
        settle(drop=drop)
        disk.gate.clear()

    monkeypatch.setattr(persister._writer, "settle", release_then_settle)
    appended = 0
    deleted: list[tuple[int, int, bool]] = []  # (events counted by the ledger on disk, appended, it names the file)
    real_unlink = Path.unlink

    def unlink(path: Path, missing_ok: bool = False) -> None:
        if path.name.startswith("events.jsonl."):
            ledger = Ledger.model_validate_json((tmp_path / LEDGER_FILE).read_bytes())
            current = (tmp_path / "events.jsonl").stat()
            names = ledger.position is not None and (ledger.position.inode, ledger.position.offset) == (
                current.st_ino, current.st_size)
            deleted.append((ledger.counters["teacher_generated"], appended, names))
        real_unlink(path, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", unlink)
    state = RunState(run_id=RUN, status="running")
    while len(deleted) < 3:
        disk.entered.clear()
        persister.mark_boundary()
        persister.maybe_write_state(state)
        assert disk.entered.wait(30)  # an older save is in the writer's hands
        rotations = persister.rotations
        while persister.rotations == rotations:
            persister.append_events([record(appended)])
            appended += 1
    assert all(counted == before and names for counted, before, names in deleted), deleted
    counts = [Ledger.model_validate_json(data).counters.get("teacher_generated", 0) for data in disk.of(LEDGER_FILE)]
    assert counts == sorted(counts)  # no older ledger landed after a newer one
    assert [who for _, _, who in disk.writes if who == "loop"]  # the rotation's own ledger saves
    disk.gate.set()
    persister.close(state)
    assert load_ledger(tmp_path).counters["teacher_generated"] == appended


def test_close_writes_the_final_state_and_joins_the_thread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    persister = opened(tmp_path)
    disk = Disk(monkeypatch)
    state = RunState(run_id=RUN, status="running")
    persister.append_events([record(0)])
    persister.mark_boundary()
    assert persister.maybe_write_state(state)
    [thread] = mine(tmp_path)
    state.status = "stopped"
    persister.append_events([record(1)])
    persister.close(state)
    assert not thread.is_alive()
    saved, ledger = on_disk(tmp_path)
    assert saved.status == "stopped" and ledger.counters["teacher_generated"] == 2
    assert disk.writes[-2:] == [("state.json", disk.of("state.json")[-1], "loop"),
                                (LEDGER_FILE, disk.of(LEDGER_FILE)[-1], "loop")]
    assert json.loads((tmp_path / "state.json").read_bytes())["status"] == "stopped"


def mine(tmp_path: Path) -> list[threading.Thread]:
    return [t for t in writers() if t.name == f"state-writer:{tmp_path.name}"]


def test_a_persister_dropped_unclosed_leaves_no_thread(tmp_path: Path) -> None:
    persister = opened(tmp_path)
    persister.maybe_write_state(RunState(run_id=RUN))  # nothing changed: not handed over, no thread
    assert mine(tmp_path) == []
    persister.mark_boundary()
    assert persister.maybe_write_state(RunState(run_id=RUN, status="running"))
    [thread] = mine(tmp_path)
    del persister
    thread.join(30)
    assert not thread.is_alive()
    assert RunState.model_validate_json((tmp_path / "state.json").read_bytes()).status == "running"


def test_an_idle_writer_ends_its_thread_and_the_next_save_starts_another(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(storage, "WRITER_IDLE_S", 0.01)
    persister = opened(tmp_path)
    state = RunState(run_id=RUN, status="running")
    persister.mark_boundary()
    persister.maybe_write_state(state)
    [first] = mine(tmp_path)
    first.join(30)
    assert not first.is_alive()  # idle, it ended, though the persister is open
    state.status = "paused"
    persister.mark_boundary()
    persister.maybe_write_state(state)
    persister.flush()
    assert RunState.model_validate_json((tmp_path / "state.json").read_bytes()).status == "paused"
    persister.close()
    assert mine(tmp_path) == []
