"""The persister: write-ahead appends, rotation, torn-line repair, atomic state, file modes."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from heidi_engine.bus import storage
from heidi_engine.bus.journal import event_files, iter_lines, read_events, repair_torn_tail
from heidi_engine.bus.state import RunState
from heidi_engine.supervisor.health import Problems
from heidi_engine.supervisor.persister import Persister
from heidi_engine.supervisor.runs import clear_orphan_temps
from heidi_engine.supervisor.spool import Spool

RUN = "run_20240215_123456_abc12345"


def record(i: int) -> dict[str, object]:
    return {"event_version": "1.0", "ts": "2024-02-15T12:34:56.789Z", "run_id": RUN, "round": 1, "stage": "generate",
            "level": "info", "event_type": "progress", "message": f"event {i:06d}", "counters_delta": {"teacher_generated": 1},
            "usage_delta": {}, "artifact_paths": []}


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_files_are_private(tmp_path: Path) -> None:
    persister = Persister(tmp_path / "run", max_bytes=10**6, retention=3)
    persister.append_events([record(0)])
    persister.write_state(RunState())
    persister.write_config({"ROUNDS": 1})
    persister.close()
    assert mode(tmp_path / "run") == 0o700
    for name in ("events.jsonl", "metrics.jsonl", "state.json", "config.json"):
        assert mode(tmp_path / "run" / name) == 0o600, name


def test_rotation_keeps_every_line_whole(tmp_path: Path) -> None:
    persister = Persister(tmp_path, max_bytes=4096, retention=100)
    for start in range(0, 300, 7):
        persister.append_events([record(i) for i in range(start, min(start + 7, 300))])
    persister.close()
    files = event_files(tmp_path)
    assert len(files) > 5
    for path in files:
        assert path.stat().st_size <= 4096
    messages = [e.message for e in read_events(tmp_path)]
    assert messages == [f"event {i:06d}" for i in range(300)]


def test_retention_drops_oldest_generation(tmp_path: Path) -> None:
    persister = Persister(tmp_path, max_bytes=2048, retention=2)
    for i in range(200):
        persister.append_events([record(i)])
    persister.close()
    names = sorted(p.name for p in event_files(tmp_path))
    assert names == ["events.jsonl", "events.jsonl.1", "events.jsonl.2"]
    messages = [e.message for e in read_events(tmp_path)]
    assert messages == sorted(messages) and messages[-1] == "event 000199"


def test_torn_tail_repaired_on_open(tmp_path: Path) -> None:
    persister = Persister(tmp_path, max_bytes=10**6, retention=3)
    persister.append_events([record(0), record(1)])
    persister.close()
    with open(tmp_path / "events.jsonl", "ab") as handle:
        handle.write(json.dumps(record(2)).encode()[:40])  # a kill -9 mid-write
    assert len(list(read_events(tmp_path))) == 2  # readers skip the torn line
    again = Persister(tmp_path, max_bytes=10**6, retention=3)
    assert again.repaired == {"events.jsonl": 40}
    again.append_events([record(3)])
    again.close()
    assert [e.message for e in read_events(tmp_path)] == ["event 000000", "event 000001", "event 000003"]


def test_repair_file_with_no_newline_at_all(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    path.write_bytes(b'{"half": ')
    assert repair_torn_tail(path) == 9
    assert path.read_bytes() == b""
    assert repair_torn_tail(path) == 0


def test_state_written_at_most_once_a_second_unless_forced(tmp_path: Path) -> None:
    now = [100.0]
    persister = Persister(tmp_path, max_bytes=10**6, retention=3, clock=lambda: now[0])
    state = RunState(run_id=RUN, status="running")
    assert not persister.maybe_write_state(state)  # nothing changed yet
    persister.append_events([record(0)])
    assert persister.maybe_write_state(state)
    persister.append_events([record(1)])
    now[0] += 0.5
    assert not persister.maybe_write_state(state)
    now[0] += 0.6
    assert persister.maybe_write_state(state)
    assert RunState.model_validate_json((tmp_path / "state.json").read_bytes()).status == "running"
    persister.close()
    assert not list(tmp_path.glob(".state.json.*"))  # no temp file left behind


def test_metrics_truncated_from_resumed_step(tmp_path: Path) -> None:
    persister = Persister(tmp_path, max_bytes=10**6, retention=3)
    for step in range(1, 9):
        persister.append_metric({"type": "trainer", "round": 1, "step": step, "total": 8})
    persister.append_metric({"type": "system", "gpus": []})
    persister.truncate_metrics_from(1, 5)
    persister.append_metric({"type": "trainer", "round": 1, "step": 5, "total": 8})
    persister.close()
    steps = [json.loads(line).get("step") for line in iter_lines(tmp_path / "metrics.jsonl")]
    assert steps == [1, 2, 3, 4, None, 5]
    assert mode(tmp_path / "metrics.jsonl") == 0o600


def test_full_disk_leaves_no_partial_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    persister = Persister(tmp_path, max_bytes=10**6, retention=3)
    persister.append_events([record(0)])
    real_write = os.write
    calls = {"n": 0}

    def failing_write(fd: int, data: bytes | memoryview) -> int:
        calls["n"] += 1
        if calls["n"] == 1:
            return real_write(fd, bytes(data)[:10])  # a partial write, then the disk is full
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", failing_write)
    with pytest.raises(OSError, match="No space"):
        persister.append_events([record(1)])
    monkeypatch.setattr(os, "write", real_write)
    persister.append_events([record(2)])
    persister.close()
    assert [e.message for e in read_events(tmp_path)] == ["event 000000", "event 000002"]


def test_a_failed_state_write_stays_a_problem_until_a_write_succeeds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A full disk: the write skipped within the second, or because nothing changed, or handed to the writer
    and not yet done, must not clear it."""
    now = [100.0]
    persister = Persister(tmp_path, max_bytes=10**6, retention=3, clock=lambda: now[0])
    problems = Problems()
    spool = Spool(persister, problems.report, clock=lambda: now[0])
    state = RunState(run_id=RUN, status="running")
    spool.write_state(state)  # written now, nothing dirty afterwards
    real_write = storage.atomic_write_bytes
    writes: list[str] = []

    def full_disk(path: Path, data: bytes, **kwargs: object) -> None:
        writes.append(Path(path).name)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(storage, "atomic_write_bytes", full_disk)
    now[0] += 5
    persister.mark_boundary()
    spool.write_state(state, unless_recent=True)  # a boundary: handed to the writer, which fails
    persister.flush()
    seen = []
    for _ in range(25):  # the loop asks every 100 ms: skipped within the second, tried again after it
        now[0] += 0.1
        spool.write_state(state, unless_recent=True)
        persister.flush()
        seen.append(problems.text)
    assert all(text is not None and "cannot write state.json: No space left on device" in text for text in seen), seen
    assert writes == ["state.json"] * 3  # the boundary, then once a second though nothing changed
    monkeypatch.setattr(storage, "atomic_write_bytes", real_write)
    now[0] += 0.5
    spool.write_state(state, unless_recent=True)  # still within the second: still behind
    assert problems.text is not None
    now[0] += 0.5
    spool.write_state(state, unless_recent=True)  # the space is back: handed over, not yet known written
    assert problems.text is not None
    persister.flush()
    spool.write_state(state, unless_recent=True)  # its success learned: the problem clears
    assert problems.text is None
    now[0] += 5
    assert not persister.maybe_write_state(state)  # nothing changed and nothing is behind: no write
    persister.close()


def test_temp_files_left_by_killed_writes_are_removed_at_start(tmp_path: Path) -> None:
    home = tmp_path
    run = home / "runs" / RUN
    (run / "data" / "round_1").mkdir(parents=True)
    (home / "run").mkdir()
    orphans = [run / ".ledger.json.k3j_9x0a.tmp", run / ".state.json.abcdefgh.tmp",
               run / "data" / "round_1" / ".generate.jsonl.0a1b2c3d.tmp", home / "run" / ".bus.json.zz99zz99.tmp",
               home / ".config.yaml.q1w2e3r4.tmp"]
    kept = [run / "ledger.json", run / ".ledger.json.tmp", run / "notes.tmp", home / ".config.yaml.fresh000.tmp"]
    for path in orphans + kept:
        path.write_text("x")
    os.utime(home / ".config.yaml.q1w2e3r4.tmp", (1, 1))  # only an old one: the menu may be editing config.yaml
    assert sorted(clear_orphan_temps(home)) == sorted(orphans)
    assert all(path.exists() for path in kept) and not any(path.exists() for path in orphans)
    again = run / ".state.json.12345678.tmp"
    again.write_text("x")
    assert clear_orphan_temps(home, run) == [again]  # before a resume: that run's folder


def test_a_resumed_trainer_cuts_back_its_own_samples_only(tmp_path: Path) -> None:
    persister = Persister(tmp_path, max_bytes=10**6, retention=3)
    for step in range(1, 5):
        persister.append_metric({"type": "trainer", "round": 1, "step": step, "total": 4})
        persister.append_metric({"type": "trainer", "round": 1, "step": step, "total": 4, "source": "external:x"})
    persister.truncate_metrics_from(1, 3, "external:x")
    persister.close()
    kept = [(json.loads(line).get("source", ""), json.loads(line)["step"]) for line in iter_lines(tmp_path / "metrics.jsonl")]
    assert [step for source, step in kept if source == ""] == [1, 2, 3, 4]
    assert [step for source, step in kept if source == "external:x"] == [1, 2]
