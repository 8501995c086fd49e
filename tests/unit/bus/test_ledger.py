"""The ledger: the run's totals survive the deletion of log generations, and readers need only its tail."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from heidi_engine.bus.event import Event
from heidi_engine.bus.journal import event_files, log_is_whole, read_events
from heidi_engine.bus.ledger import LEDGER_FILE, Ledger, LedgerLost, Totals, load_ledger, replay, stored_state
from heidi_engine.bus.state import RunState, apply_events
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


# -- a lost ledger ----------------------------------------------------------------------------------


class Run:
    """A run written as the supervisor writes it: events through a persister, folded into a state that is
    saved with the ledger; ``kill`` leaves the files as a kill -9 would."""

    def __init__(self, run_dir: Path, *, max_bytes: int = 4096, retention: int = 1) -> None:
        self.persister = Persister(run_dir, max_bytes=max_bytes, retention=retention)
        self.state = RunState(run_id=RUN, status="running", total_rounds=2)
        self.i = 0

    def emit(self, stage: str, round_no: int, kind: str = "progress", level: str = "info") -> None:
        self.i += 1
        rec = record(self.i, stage=stage, round_no=round_no, kind=kind, level=level)
        if kind == "progress" and stage != "generate":
            rec["counters_delta"], rec["usage_delta"] = {"validated_ok": 1}, {}
        self.persister.append_events([rec])
        apply_events(self.state, [(Event.model_validate(rec), rec)])

    def stage(self, round_no: int, stage: str, items: int, *, end: bool = True) -> None:
        self.emit(stage, round_no, "stage_start")
        for n in range(items):
            self.emit(stage, round_no)
            if n % 3 == 2:  # the supervisor saves state.json and the ledger about once a second
                self.persister.write_state(self.state)
        if end:
            self.emit(stage, round_no, "stage_end", "success")

    def kill(self) -> None:
        del self.persister


def killed_in_round_2(run_dir: Path, *, items: int = 8, last_stage_items: int = 5) -> Run:
    """A run killed in round 2's validate stage, after rotation deleted generations (retention 1)."""
    run = Run(run_dir)
    run.emit("round_start", 0, "pipeline_start")
    for round_no in (1, 2):
        run.emit("round_start", round_no, "stage_start")
        for stage in ("generate", "validate", "train", "eval"):
            if (round_no, stage) == (2, "validate"):
                run.stage(round_no, stage, last_stage_items, end=False)
                run.persister.write_state(run.state)
                run.emit(stage, round_no)  # written after the last save: only the log has it
                run.kill()
                assert not log_is_whole(run_dir), "rotation should have deleted generations"
                return run
            run.stage(round_no, stage, items)
        run.emit("round_end", round_no, "stage_end", "success")
    raise AssertionError("unreachable")


def test_a_lost_ledger_is_rebuilt_from_state_json_and_the_events_after_it(tmp_path: Path) -> None:
    killed_in_round_2(tmp_path)
    whole = load_ledger(tmp_path)  # what the ledger knew: the truth
    assert whole.done() == {(1, s) for s in ("generate", "validate", "train", "eval", "round_end")} | {(2, "generate")}
    for damage in ("removed", "truncated"):
        saved = (tmp_path / LEDGER_FILE).read_bytes()
        if damage == "removed":
            (tmp_path / LEDGER_FILE).unlink()
        else:
            (tmp_path / LEDGER_FILE).write_bytes(saved[: len(saved) // 2])
        rebuilt = load_ledger(tmp_path)
        assert rebuilt.counters == whole.counters and rebuilt.usage == whole.usage, damage
        assert rebuilt.done() == whole.done(), damage
        # What the stage to resume already counted is exact, so it counts nothing twice.
        assert rebuilt.totals("validate", 2) == whole.totals("validate", 2) == Totals(counters={"validated_ok": 6})
        assert abs(rebuilt.stage_cost("generate") - whole.stage_cost("generate")) < 1e-9  # the budget's spend
        assert rebuilt.event_count == whole.event_count and rebuilt.position == whole.position
        (tmp_path / LEDGER_FILE).write_bytes(saved)


def test_a_lost_ledger_is_refused_when_state_json_cannot_stand_in(tmp_path: Path) -> None:
    killed_in_round_2(tmp_path)
    truth = load_ledger(tmp_path)
    state_bytes = (tmp_path / "state.json").read_bytes()
    (tmp_path / LEDGER_FILE).unlink()
    state = RunState.model_validate_json(state_bytes)
    cases = {
        "it is missing or unreadable": b"",
        "it holds no event to find its place in the log by": state.model_copy(update={"recent_events": []}),
        "ends with an event that the event files no longer hold": state.model_copy(
            update={"recent_events": [*state.recent_events[:-1], {**state.recent_events[-1], "message": "x"}]}),
    }
    for reason, damaged in cases.items():
        data = damaged if isinstance(damaged, bytes) else damaged.model_dump_json().encode()
        (tmp_path / "state.json").write_bytes(data)
        with pytest.raises(LedgerLost) as lost:
            load_ledger(tmp_path)
        text = str(lost.value)
        assert reason in text and "ledger.json is missing" in text and "state.json cannot stand in" in text
        assert f"echo '{{}}' > {tmp_path / LEDGER_FILE}" in text and "\n" not in text
    # The operator's choice: an empty ledger counts what the event files still hold, and no more.
    (tmp_path / "state.json").write_bytes(state_bytes)
    (tmp_path / LEDGER_FILE).write_text("{}")
    partial = load_ledger(tmp_path)
    assert 0 < partial.counters["validated_ok"] < truth.counters["validated_ok"]


def test_a_stage_begun_in_a_deleted_file_cannot_be_resumed_from_state_json(tmp_path: Path) -> None:
    killed_in_round_2(tmp_path, last_stage_items=30)  # validate's start is more than a generation back
    (tmp_path / LEDGER_FILE).unlink()
    with pytest.raises(LedgerLost, match="what validate of round 2 counted began in a deleted event file"):
        load_ledger(tmp_path)


def test_an_empty_state_json_is_told_by_the_ledger(tmp_path: Path) -> None:
    run = Run(tmp_path)
    run.emit("round_start", 0, "pipeline_start")
    run.stage(1, "generate", 4, end=False)
    run.persister.write_config({"ROUNDS": 3, "SEED": 7})
    run.persister.close(run.state)
    (tmp_path / "state.json").write_bytes(b"")
    state = stored_state(tmp_path)
    assert state is not None and state.run_id == RUN and state.status == "running"
    assert state.counters["teacher_generated"] == 4 and state.total_rounds == 3 and state.config["SEED"] == 7
    assert stored_state(tmp_path / "nothing") is None
