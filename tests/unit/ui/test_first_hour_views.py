"""The first hour on screen (issue 28), from constructed frames and states: no sockets, no processes.

A dead supervisor's run reads interrupted everywhere (point 4), a home with no supervisor says so
(point 2), a finished run's clock stands still (point 7), 80×24 shows every tab and Eval column
(point 8), a local teacher names its model, and ``s`` on a finished run refuses at once (point 12).
"""

from __future__ import annotations

import io
from datetime import datetime, timezone
from pathlib import Path

from rich.console import Console
from ui_builders import NOW, RUN_ID, make_frame, make_state, screen

from heidi_engine.bus.state import EvalSample, EvalScores, RunState
from heidi_engine.ui.dashboard.app import Dashboard, Feed
from heidi_engine.ui.dashboard.controls import RunControl
from heidi_engine.ui.dashboard.frame import Link
from heidi_engine.ui.dashboard.screen import elapsed_s
from heidi_engine.ui.status_view import (
    Health,
    format_runs,
    orphaned,
    orphaned_summary,
    resume_hint,
    status_fields,
)

HOME = "/tmp/first-hour-home"


def files_link(source: str = f"runs/{RUN_ID}", down: str = "exited") -> Link:
    return Link("live", False, None, None, 7, source, down=down, home=HOME)


def test_a_dead_supervisors_run_is_interrupted_with_no_agent_running() -> None:
    state = make_state(status="running", pause_requested=True)
    gone = orphaned(state)
    assert gone.status == "interrupted" and gone.agents == {} and not gone.pause_requested
    assert state.status == "running" and state.agents, "the live view's copy is never changed"
    assert orphaned(make_state(status="completed")).status == "completed"
    fields = status_fields(gone, Health("down", "pid 7 of its connection file is gone"))
    assert fields["status"] == "interrupted"
    run = orphaned_summary({"run_id": RUN_ID, "status": "running"})
    assert run["status"] == "interrupted" and resume_hint(run) == f"autotrain-menu --resume-run {RUN_ID} continues it"
    assert "interrupted" in format_runs([run])
    text = screen(make_frame(state=gone, link=files_link()))
    assert "INTERRUPTED" in text and "RUNNING" not in text and "train:running" not in text
    assert "supervisor not running (its process exited)" in text and f"runs/{RUN_ID} from its files" in text
    assert f"autotrain-menu --resume-run {RUN_ID} continues it" in text


def test_a_home_with_no_run_says_how_to_start_one_not_that_it_shut_down() -> None:
    text = screen(make_frame(state=RunState(), link=files_link("", "absent"), events=()))
    assert f"no run in {HOME} yet; autotrain-menu --start starts one" in text
    assert "supervisor not running" in text and "shut down" not in text
    done = screen(make_frame(state=make_state(status="completed", agents={}), link=files_link(down="shut down")))
    assert "COMPLETED" in done and "supervisor not running (shut down)" in done and "as its files tell it" in done


def test_a_finished_runs_elapsed_time_is_fixed() -> None:
    later = datetime(2100, 1, 1, tzinfo=timezone.utc)
    done = make_state(status="completed")  # 12:34:56 → 12:39:00
    assert elapsed_s(done, NOW) == elapsed_s(done, later) == 244.0
    # A replayed run with no recorded update ends at its last event, never at "now".
    replayed = make_state(status="stopped", updated_at=None, last_event_ts="2024-02-15T12:35:56.000Z")
    assert elapsed_s(replayed, later) == 60.0
    assert elapsed_s(make_state(status="failed", updated_at=None), later) is None
    assert "elapsed 4m 04s" in screen(make_frame(state=done, now=later))


def _evals() -> list[EvalSample]:
    base = EvalScores(val_loss=2.0, n_val=164, val_pass_at_1=0.25, val_passed=41, val_ci=(0.19, 0.32),
                      humaneval_pass_at_1=0.12, n_humaneval=164, humaneval_ci=(0.08, 0.18))  # fmt: skip
    adapter = base.model_copy(update={"val_pass_at_1": 0.31, "val_loss": 1.75, "val_ci": (0.24, 0.38),
                                      "humaneval_pass_at_1": 0.5})  # fmt: skip
    return [EvalSample(round=r, base=base, adapter=adapter, base_round=1, best_round=12) for r in (1, 12)]


def test_80x24_shows_every_tab_and_every_eval_column() -> None:
    state = make_state(status="completed", evals=_evals(), best_round=12)
    text = screen(make_frame(state=state, view=6), 80, 24)
    tabs = text.splitlines()[2]
    for label in ("1 Overview", "2 Teacher", "3 Trainer", "4 Events", "5 Config", "6 Eval"):
        assert label in tabs, tabs
    assert "…" not in tabs
    rows = [line for line in text.splitlines() if line.startswith("│ 12 ★") or line.startswith("│ 1 ")]
    assert len(rows) == 2, text
    for row in rows:
        assert "[0.24–0.38] n=164" in row and "0.12→0.50" in row and "…" not in row, row
    assert "adapter CI" in text and "HumanEval" in text
    wide = screen(make_frame(state=state, view=6), 120, 30)
    assert "6 Eval" in wide and "adapter 95% CI" in wide and "0.12→0.50" in wide


def test_a_local_teacher_shows_its_model_not_an_api_url() -> None:
    config = {"TEACHER_MODEL": "local:HuggingFaceTB/SmolLM2-360M-Instruct", "TEACHER_BASE_URL": "https://api.openai.com/v1"}
    text = screen(make_frame(state=make_state(config=config), view=2), 120)
    assert "api.openai.com" not in text and "TEACHER_BASE_URL" not in text
    assert "local model" in text and "HuggingFaceTB/SmolLM2-360M-Instruct (in-process" in text
    remote = screen(make_frame(state=make_state(config={**config, "TEACHER_MODEL": "gpt-4o-mini"}), view=2), 120)
    assert "TEACHER_BASE_URL     https://api.openai.com/v1" in remote


class _Still:
    """A source whose feed never changes."""

    def __init__(self, state: RunState) -> None:
        self.feed = Feed(state, Link("live", True, 0.1, None, 3), (), ("still",))

    def read(self) -> Feed:
        return self.feed

    def refresh(self) -> None:
        """Nothing to re-read."""

    def close(self) -> None:
        """Nothing held."""


def test_stop_on_a_finished_run_refuses_at_once_saying_why(tmp_path: Path) -> None:
    console = Console(width=100, height=30, file=io.StringIO())
    control = RunControl(tmp_path)
    dash = Dashboard(_Still(make_state(status="completed")), console, control=control, wall=lambda: NOW)
    dash.key("s")
    assert not control.confirming
    assert control.notice() == "stop: nothing to stop, the run is completed"
    assert "y/n" not in str(control.notice())
    control.key("s", "interrupted")
    assert "the run is interrupted (autotrain-menu --resume-run continues it)" in str(control.notice())
    control.key("s", "idle")
    assert control.notice() == "stop: no run to stop"
    control.key("s", "running")
    assert control.confirming and control.notice() == "stop the run at its next stage boundary? y/n"
