"""Issue 28, point 5: ``--wait``'s progress tells the truth.

A piped follower writes a line only when something changed (or as a 30 s heartbeat); the ETA is a moving
average shown from the third item on; a stage's line never carries another stage's figures; eval says how
far it got; the generate total includes the held-out answers and says so; a pending pause says what it
waits for.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from harness import FakeClock

from heidi_engine.ui.menu import follow
from heidi_engine.ui.menu.follow import StageProgress, pause_hint

RUN = "run_20240215_123456_abc12345"


def _event(stage: str, message: str, *, round_no: int = 1, event_type: str = "progress") -> dict[str, Any]:
    return {"stage": stage, "round": round_no, "event_type": event_type, "message": message}


def _generating(written: int, *, held: int = 4, total: int = 12) -> dict[str, Any]:
    incl = f" (incl. {held} held-out answers)" if held else ""
    message = f"generate round 1: {written}/{total} written{incl}, 0 failed"
    return {"current_stage": "generate", "current_round": 1, "config": {"SAMPLES_PER_ROUND": 8},
            "recent_events": [_event("generate", "stage generate started", event_type="stage_start"),
                              _event("generate", message)]}  # fmt: skip


def test_the_generate_total_includes_the_held_out_answers_and_says_so() -> None:
    # Today: "sample 5/8" from SAMPLES_PER_ROUND while the events say 5/12 written.
    assert StageProgress().detail(_generating(5), now=0.0) == "sample 5/12 (incl. 4 held-out)"
    assert StageProgress().detail(_generating(3, held=0, total=8), now=0.0) == "sample 3/8"


def test_the_eta_waits_for_three_items_and_follows_a_moving_average() -> None:
    progress = StageProgress()
    assert progress.detail(_generating(0), now=0.0) == "sample 0/12 (incl. 4 held-out)"
    # One item, then two: no ETA yet (today an ETA extrapolated from the first one).
    assert progress.detail(_generating(1), now=10.0) == "sample 1/12 (incl. 4 held-out)"
    assert progress.detail(_generating(2), now=20.0) == "sample 2/12 (incl. 4 held-out)"
    assert progress.detail(_generating(3), now=30.0) == "sample 3/12 (incl. 4 held-out) · ETA 1m 30s"
    # Polls without a new item do not move it (no swing from one sample's timing).
    assert progress.detail(_generating(3), now=45.0) == "sample 3/12 (incl. 4 held-out) · ETA 1m 30s"
    # A slow item shifts the average, it does not take it over.
    assert progress.detail(_generating(4), now=70.0) == "sample 4/12 (incl. 4 held-out) · ETA 2m 20s"


def test_a_stage_never_shows_another_stages_figures() -> None:
    trainer = {"round": 1, "step": 8, "total": 8, "eta_s": 0.0}
    evaluating = {"current_stage": "eval", "current_round": 1, "trainer": trainer, "counters": {},
                  "recent_events": [_event("train", "adapter trained: 8 steps")]}  # fmt: skip
    text = StageProgress().detail(evaluating, now=0.0)
    assert text is not None and "step" not in text and "ETA" not in text
    # Round 2's train before its first step: round 1's trainer figures are not this round's.
    training = {"current_stage": "train", "current_round": 2, "trainer": trainer}
    assert StageProgress().detail(training, now=0.0) is None


def test_eval_reports_per_batch_and_per_answer_tested() -> None:
    progress = StageProgress()
    state: dict[str, Any] = {"current_stage": "eval", "current_round": 1, "recent_events": []}
    state["recent_events"] = [_event("eval", "eval round 1: generated 16/40 answers")]
    assert progress.detail(state, now=0.0) == "generated 16/40 answers"
    state["recent_events"].append(_event("eval", "eval round 1: tested 12/40 answers, 7 passed"))
    assert progress.detail(state, now=1.0) == "tested 12/40 answers, 7 passed"


def test_a_pending_pause_says_what_it_waits_for() -> None:
    hint = "pause requested: pausing after the current teacher batch, ~40 s"
    state = {"pause_requested": True, "status": "running", "recent_events": [_event("generate", hint)]}
    assert pause_hint(state) == "pausing after the current teacher batch, ~40 s"
    assert pause_hint({**state, "status": "paused"}) is None


class _Client:
    """Answers ``status`` and ``snapshot`` from a script of states, one state per ``status`` call."""

    def __init__(self, states: Iterator[dict[str, Any]]) -> None:
        self.states = states
        self.state: dict[str, Any] = {}
        self.info = SimpleNamespace(remote=False, pid=1)

    def call(self, name: str, timeout_s: float = 0.0) -> dict[str, Any]:
        if name == "status":
            self.state = next(self.states)
            return {"run_id": RUN, "total_rounds": 1, **self.state}
        return {"state": self.state}


def test_a_piped_follower_prints_only_changes_and_a_heartbeat(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock()
    monkeypatch.setattr(follow, "time", clock)
    running = {"status": "running", "pause_requested": False}

    def script() -> Iterator[dict[str, Any]]:
        # 100 s of generate at 0.2 s a poll: an item every 10 s for the first 3, then nothing for 70 s.
        for _poll in range(500):
            written = min(3, int(clock.now // 10))
            yield {**running, **_generating(written)}
        yield {**running, **_generating(3), "status": "completed", "current_stage": "eval"}

    out = io.StringIO()
    assert follow.follow_run(_Client(script()), RUN, out, io.StringIO()) == 0  # type: ignore[arg-type]
    lines = out.getvalue().splitlines()
    # Today: a line per second. Now: the first line, one per new item (3), a heartbeat every 30 s of the
    # 70 quiet seconds (2), the completed status and "run ... completed".
    assert len(lines) == 8, lines
    assert sum("sample 3/12" in line for line in lines) == 3  # its change, then two heartbeats
