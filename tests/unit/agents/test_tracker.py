"""Eval results to the REPORT_TO tracker: TensorBoard event files, and a warning for a missing tracker."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from heidi_engine.agents.evaluation.tracker import log_eval
from heidi_engine.bus.config import load_config
from heidi_engine.bus.state import EvalSample, EvalScores

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from harness import FileRuntime

OUTCOME = EvalSample(round=2, base=EvalScores(val_loss=2.0, n_val=3), adapter=EvalScores(val_loss=1.5, n_val=3,
                     val_pass_at_1=2 / 3, val_passed=2))  # fmt: skip


def runtime(tmp_path: Path, tracker: str) -> FileRuntime:
    return FileRuntime(tmp_path, load_config(None, env={}, overrides={"REPORT_TO": tracker}), "eval")


def test_tensorboard_gets_the_eval_scalars_beside_the_trainers(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    log_eval(runtime(tmp_path, "tensorboard"), OUTCOME)  # type: ignore[arg-type]
    events = EventAccumulator(str(tmp_path / "tracking" / "round_2"))
    events.Reload()
    assert [(s.step, s.value) for s in events.Scalars("eval/adapter/val_loss")] == [(2, 1.5)]
    assert [s.value for s in events.Scalars("eval/base/val_loss")] == [2.0]
    assert "eval/base/heldout_pass_at_1" not in events.Tags()["scalars"]  # not measured: not logged as 0


def test_none_logs_nothing_and_a_missing_tracker_is_a_warning(tmp_path: Path) -> None:
    log_eval(runtime(tmp_path, "none"), OUTCOME)  # type: ignore[arg-type]
    assert not (tmp_path / "tracking").exists() and not (tmp_path / "events.jsonl").exists()
    if importlib.util.find_spec("mlflow") is not None:
        pytest.skip("mlflow is installed here")
    log_eval(runtime(tmp_path, "mlflow"), OUTCOME)  # type: ignore[arg-type]
    event = json.loads((tmp_path / "events.jsonl").read_text().splitlines()[-1])
    assert event["level"] == "warn" and "mlflow is not installed" in event["message"]
