"""The ledger: the run's totals survive the deletion of log generations, and readers need only its tail."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from heidi_engine.bus.journal import event_files, read_events
from heidi_engine.bus.ledger import LEDGER_FILE, Ledger, load_ledger, replay
from heidi_engine.bus.state import RunState
from heidi_engine.supervisor.persister import Persister

RUN = "run_20240215_123456_abc12345"


def record(i: int, *, stage: str = "generate", round_no: int = 1, kind: str = "progress",
           level: str = "info", cost: float | None = 0.001) -> dict[str, Any]:
    return {"event_version": "1.0", "ts": f"2024-02-15T12:34:{i % 60:02d}.000Z", "run_id": RUN, "round": round_no,
            "stage": stage, "level": level, "event_type": kind, "message": f"event {i:06d}",
            "counters_delta": {"teacher_generated": 1} if kind == "progress" else {},
            "usage_delta": {"requests_sent": 1, "estimated_cost_usd": cost} if kind == "progress" else {},
            "artifact_paths": []}


def write_run(run_dir: Path, count: int, *, max_bytes: int = 2048, retention: int = 1, save_every: int = 10) -> Persister:
    persister = Persister(run_dir, max_bytes=max_bytes, retention=retention)
    persister.append_events([record(0, stage="generate", kind="stage_start")])
    for i in range(1, count + 1):
        persister.append_events([record(i)])
        if i % save_every == 0:
            persister.write_state(RunState(run_id=RUN, status="running"))
    persister.append_events([record(count + 1, stage="generate", kind="stage_end", level="success")])
    return persister


def test_totals_survive_retention_deleting_generations(tmp_path: Path) -> None:
    persister = write_run(tmp_path, 200)
    persister.close(RunState(run_id=RUN, status="stopped"))
    assert persister.rotations >= 20
    assert len(event_files(tmp_path)) == 2  # retention 1: all but the last generation are gone
    assert sum(e.counters_delta.get("teacher_generated", 0) for e in read_events(tmp_path)) < 30
    ledger = load_ledger(tmp_path)
    assert ledger.counters["teacher_generated"] == 200
    assert ledger.usage["requests_sent"] == 200
    assert ledger.done() == {(1, "generate")}
    assert ledger.totals("generate", 1).counters == {"teacher_generated": 200}
    assert abs(ledger.stage_cost("generate") - 0.2) < 1e-9
    state = replay(tmp_path)
    assert state.counters["teacher_generated"] == 200 and state.event_count == 202
    assert state.recent_events[-1]["message"] == "event 000201"


def test_events_written_after_the_last_save_are_counted_from_the_tail(tmp_path: Path) -> None:
    persister = write_run(tmp_path, 95, max_bytes=10**6, save_every=10)  # saved at 90; 5 + stage_end after
    saved = Ledger.model_validate_json((tmp_path / LEDGER_FILE).read_bytes())
    assert saved.counters["teacher_generated"] == 90
    # A kill -9 now: the files stay as they are, nothing more is saved.
    del persister
    assert load_ledger(tmp_path).counters["teacher_generated"] == 95
    again = Persister(tmp_path, max_bytes=10**6, retention=1)  # a restarted supervisor carries on from there
    assert again.ledger.counters["teacher_generated"] == 95 and again.ledger.done() == {(1, "generate")}
    again.append_events([record(500)])
    again.close(RunState(run_id=RUN))
    assert load_ledger(tmp_path).counters["teacher_generated"] == 96


def test_a_position_is_found_after_renames_and_in_a_copied_folder(tmp_path: Path) -> None:
    run = tmp_path / RUN
    persister = write_run(run, 40, max_bytes=1500, retention=50, save_every=7)
    persister.close(RunState(run_id=RUN))
    copy = tmp_path / "copy" / RUN
    shutil.copytree(run, copy)  # new inodes: the position is found by the first line's digest
    for folder in (run, copy):
        assert load_ledger(folder).counters["teacher_generated"] == 40
        assert load_ledger(folder).event_count == sum(1 for _ in read_events(folder))


def test_a_torn_last_line_is_not_counted(tmp_path: Path) -> None:
    persister = write_run(tmp_path, 12, max_bytes=10**6)
    del persister
    with open(tmp_path / "events.jsonl", "ab") as handle:
        handle.write(json.dumps(record(99)).encode()[:50])
    assert load_ledger(tmp_path).counters["teacher_generated"] == 12


def test_a_run_without_a_ledger_is_counted_from_its_files(tmp_path: Path) -> None:
    persister = write_run(tmp_path, 30, max_bytes=10**6, retention=5)
    persister.close(RunState(run_id=RUN))
    (tmp_path / LEDGER_FILE).unlink()
    assert load_ledger(tmp_path).counters["teacher_generated"] == 30
    (tmp_path / LEDGER_FILE).write_text("{not json")
    assert load_ledger(tmp_path).counters["teacher_generated"] == 30


def test_an_unknown_cost_makes_the_run_cost_unknown_but_stage_cost_stays_known(tmp_path: Path) -> None:
    persister = Persister(tmp_path, max_bytes=10**6, retention=1)
    persister.append_events([record(1, cost=0.5), record(2, cost=None), record(3, cost=0.25)])
    persister.close(RunState(run_id=RUN))
    ledger = load_ledger(tmp_path)
    assert ledger.usage["estimated_cost_usd"] is None
    assert ledger.stage_cost("generate") == 0.75  # what is known was spent (the budget counts it)


def test_readers_start_from_the_ledger_and_read_only_what_follows_it(tmp_path: Path) -> None:
    persister = write_run(tmp_path, 300, max_bytes=10**6)
    persister.close(RunState(run_id=RUN))
    saved = Ledger.model_validate_json((tmp_path / LEDGER_FILE).read_bytes())
    # Had a reader gone through the log, it would find 300; it takes the ledger's word and the tail.
    saved.counters["teacher_generated"] = 12345
    saved.save(tmp_path)
    with open(tmp_path / "events.jsonl", "ab") as handle:
        handle.write((json.dumps(record(301)) + "\n").encode())
    assert load_ledger(tmp_path).counters["teacher_generated"] == 12346
