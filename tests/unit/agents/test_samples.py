"""The sample record and the round's JSONL files: round trips, torn lines, atomic rewrites, modes."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from heidi_engine.agents.dataset.samples import (
    Counted,
    JsonlAppender,
    Sample,
    SampleMetadata,
    already_counted,
    read_jsonl_skipping_bad,
    read_jsonl_strict,
    sample_id,
    write_jsonl,
)
from heidi_engine.agents.layout import RoundFiles
from heidi_engine.agents.runtime import FatalStageError
from heidi_engine.bus.event import Event


def _sample(index: int = 0, **metadata: Any) -> Sample:
    meta = {
        "task_id": "bank/001_add_numbers",
        "entry_point": "add_numbers",
        "round": 1,
        "teacher_model": "gpt-4o-mini",
        "usage": {"requests_sent": 1, "input_tokens": 30, "output_tokens": 12},
        "ts": "2024-02-15T12:34:56.789Z",
        **metadata,
    }
    return Sample(
        id=sample_id(1, index),
        instruction="Return a + b.\n\nWrite this function:\ndef add_numbers(a: int, b: int) -> int:",
        input="",
        output="def add_numbers(a, b):\n    return a + b",
        tests="assert add_numbers(2, 3) == 5",
        metadata=SampleMetadata.model_validate(meta),
    )


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_sample_ids_are_deterministic_and_sort_in_order() -> None:
    assert sample_id(1, 7) == "r1-00007"
    ids = [sample_id(3, i) for i in (10, 9, 100, 0)]
    assert sorted(ids) == [sample_id(3, i) for i in (0, 9, 10, 100)]


def test_record_round_trips_and_carries_secret_kinds_only_when_found() -> None:
    clean = _sample().record()
    assert "secret_kinds" not in clean["metadata"]
    assert Sample.model_validate(clean) == _sample()
    flagged = _sample(secret_kinds=["aws_access_key_id"]).record()
    assert flagged["metadata"]["secret_kinds"] == ["aws_access_key_id"]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"id": "sample-1"}, "id"),
        ({"output": None}, "output"),
        ({"tests": 3}, "tests"),
        ({"extra": "x"}, "extra"),
    ],
)
def test_sample_refuses_bad_records(change: dict[str, Any], field: str) -> None:
    record = {**_sample().record(), **change}
    with pytest.raises(ValidationError, match=field):
        Sample.model_validate(record)


def test_appender_writes_whole_synced_lines_with_mode_0600(tmp_path: Path) -> None:
    files = RoundFiles.of(tmp_path, 2).ensure()
    assert _mode(files.folder) == 0o700 and _mode(files.folder.parent) == 0o700
    old = os.umask(0)
    try:
        with JsonlAppender(files.raw) as raw:
            raw.append(_sample(0).record())
            raw.append(_sample(1).record())
    finally:
        os.umask(old)
    assert _mode(files.raw) == 0o600
    assert [row["id"] for row in read_jsonl_skipping_bad(files.raw)] == ["r1-00000", "r1-00001"]


def test_reader_skips_a_torn_last_line_and_the_appender_cuts_it(tmp_path: Path) -> None:
    path = tmp_path / "raw.jsonl"
    with JsonlAppender(path) as raw:
        raw.append(_sample(0).record())
    whole = path.read_bytes()
    torn = json.dumps(_sample(1).record()).encode()[:40]
    path.write_bytes(whole + torn)
    assert [row["id"] for row in read_jsonl_skipping_bad(path)] == ["r1-00000"]
    with JsonlAppender(path) as raw:
        raw.append(_sample(2).record())
    assert path.read_bytes().startswith(whole) and torn not in path.read_bytes()
    assert [row["id"] for row in read_jsonl_skipping_bad(path)] == ["r1-00000", "r1-00002"]


def test_reader_skips_lines_that_are_not_objects_and_keeps_unicode_separators(tmp_path: Path) -> None:
    path = tmp_path / "clean.jsonl"
    row = {"id": "r1-00000", "output": "s = 'a\u2028b'"}
    write_jsonl(path, [row])
    with open(path, "ab") as handle:
        handle.write(b"[1, 2]\nnot json\n\n")
    write_jsonl(tmp_path / "other.jsonl", [])
    assert read_jsonl_skipping_bad(path) == [row]
    assert read_jsonl_skipping_bad(tmp_path / "missing.jsonl") == []
    assert read_jsonl_skipping_bad(tmp_path / "other.jsonl") == []


def test_strict_reader_refuses_what_the_skipping_one_skips(tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl"
    write_jsonl(path, [{"n": 0}])
    assert read_jsonl_strict(path) == [{"n": 0}] == read_jsonl_skipping_bad(path)
    for bad, message in ((b"not json\n", "line 2: not valid JSON"), (b"[1]\n", "line 2: expected a JSON object")):
        path.write_bytes(b'{"n": 0}\n' + bad)
        with pytest.raises(FatalStageError, match=message):
            read_jsonl_strict(path)
        assert read_jsonl_skipping_bad(path) == [{"n": 0}]
    with pytest.raises(FatalStageError, match="cannot read"):
        read_jsonl_strict(tmp_path / "missing.jsonl")


def test_write_jsonl_replaces_atomically_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl"
    path.write_text('{"old": 1}\n')
    path.chmod(0o644)
    assert write_jsonl(path, ({"n": i} for i in range(3))) == 3
    assert read_jsonl_skipping_bad(path) == [{"n": 0}, {"n": 1}, {"n": 2}]
    assert _mode(path) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.jsonl"]


def test_write_jsonl_leaves_the_old_file_when_a_row_cannot_be_written(tmp_path: Path) -> None:
    path = tmp_path / "val.jsonl"
    write_jsonl(path, [{"n": 1}])
    with pytest.raises(TypeError):
        write_jsonl(path, [{"n": 2}, {"bad": object()}])
    assert read_jsonl_skipping_bad(path) == [{"n": 1}]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["val.jsonl"]


def test_already_counted_sums_one_stage_and_round_of_the_event_log(tmp_path: Path) -> None:
    run_id = "run_20240101_000000_0123abcd"

    def event(stage: str, round_no: int, counters: dict[str, int], usage: dict[str, Any]) -> str:
        return Event(
            run_id=run_id,
            round=round_no,
            stage=stage,
            event_type="progress",
            counters_delta=counters,
            usage_delta=usage,
        ).model_dump_json()

    lines = [
        event("generate", 1, {"teacher_generated": 2}, {"input_tokens": 10, "estimated_cost_usd": 0.5}),
        event("generate", 1, {"teacher_generated": 1, "teacher_failed": 1}, {"estimated_cost_usd": None}),
        event("generate", 2, {"teacher_generated": 5}, {"input_tokens": 7, "estimated_cost_usd": 0.25}),
        event("validate", 1, {"validated_ok": 3}, {}),
    ]
    (tmp_path / "events.jsonl").write_text("\n".join(lines) + "\n" + lines[0][:30])
    counted = already_counted(tmp_path, "generate", 1)
    assert counted.counters == {"teacher_generated": 3, "teacher_failed": 1}
    assert counted.usage == {"input_tokens": 10, "estimated_cost_usd": 0.5}
    assert counted.run_cost == 0.75
    assert already_counted(tmp_path, "eval", 1) == Counted({}, {}, 0.0)
