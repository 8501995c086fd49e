"""The menu's smaller traps of issue 28, point 12: a TensorBoard export made twice, ``--compare``'s
columns and durations, option 8's port, Configure's summary and its "did you mean", and a pending pause
in the menu's status line."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import TESTS, SupervisorProc, agent_env, scripted
from menu_driver import CONFIG, MENU, MenuPty

from heidi_engine.ui.menu import interactive
from heidi_engine.ui.menu.actions import Controller
from heidi_engine.ui.menu.compare import format_compare

pytestmark = pytest.mark.timeout(180)


def _menu(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*MENU, "--home", str(home), *args], stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=60, check=False)  # fmt: skip


@pytest.fixture
def two_runs(start_supervisor: Callable[..., SupervisorProc]) -> Iterator[tuple[str, str]]:
    env = agent_env(scripted("--events", "1"), eval=f"{sys.executable} {TESTS / 'agents' / 'eval_outcome_agent.py'}")
    sup = start_supervisor(env=env, config="ROUNDS: 2\n").wait_ready()
    first = sup.call("start")["run_id"]
    assert sup.wait_status("completed", "failed")["status"] == "completed", sup.output()
    second = sup.call("start", {"overrides": {"ROUNDS": 1}})["run_id"]
    assert sup.wait_status("completed", "failed")["status"] == "completed", sup.output()
    yield first, second


def test_exporting_twice_into_one_folder_replaces_and_another_run_is_refused(
    two_runs: tuple[str, str], home: Path, tmp_path: Path
) -> None:
    first, second = two_runs
    out = tmp_path / "tb"
    for _ in range(2):
        done = _menu(home, "--export-tensorboard", first, str(out))
        assert done.returncode == 0, done.stderr
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out))
    events.Reload()
    assert [(s.step, s.value) for s in events.Scalars("eval/adapter/heldout_pass_at_1")] == [(1, 0.25), (2, 0.5)]
    assert len(list(out.glob("events.out.tfevents.*"))) == 1
    refused = _menu(home, "--export-tensorboard", second, str(out))
    assert refused.returncode == 2 and str(out) in refused.stderr and first in refused.stderr, refused.stderr

    text = _menu(home, "--compare", first, second).stdout.splitlines()
    listed = _menu(home, "--list").stdout
    duration = next(line for line in text if line.startswith("duration "))
    assert all(cell in listed for cell in duration.split()[1:]), (duration, listed)  # --list's format


def test_compare_shows_whole_field_names_and_aligned_columns() -> None:
    cell = {"base": {"val_loss": 2.0, "val_pass_at_1": 0.25, "n_val": 4}, "delta": {"val_pass_at_1": 0.0},
            "adapter": {"val_loss": 1.75, "val_pass_at_1": 0.25, "n_val": 4, "val_ci": [0.05, 0.7]}}  # fmt: skip
    a, b = "run_20260101_000000_aaaaaaaa", "run_20260101_000001_bbbbbbbb"
    result: dict[str, Any] = {
        "runs": [{"run_id": a, "status": "completed", "duration_s": 257.6}, {"run_id": b, "duration_s": 12.0}],
        "config_differences": {"TEACHER_PARK_INTERVAL_S": [1, 2]},
        "rounds": [{"round": 1, a: cell, b: cell}],
    }
    lines = format_compare(result).splitlines()
    assert any(line.split() == ["duration", "4m17s", "0m12s"] for line in lines), lines
    assert any("TEACHER_PARK_INTERVAL_S" in line for line in lines), lines
    column = lines[0].index(b)
    eval_row = next(line for line in lines if line.startswith("  round 1"))
    assert eval_row[column:].startswith("loss 2.000→1.750") and eval_row[column - 2 : column] == "  ", lines


def test_option_8_asks_for_the_port_and_configure_lists_batch_size_and_guesses_names(
    home: Path, menu_pty: Callable[..., MenuPty]
) -> None:
    (home / "config.yaml").write_text(CONFIG + "HTTP_PORT: 7790\n")
    menu = menu_pty()
    menu.choose("8")
    menu.expect("HTTP_PORT [integer 1024–65535] (Enter keeps 7790, Esc backs out) =")
    menu.send("\x1b")
    menu.expect("(cancelled)")
    menu.choose("6")
    menu.expect("Field to change")
    assert "BATCH_SIZE" in menu.screen.text(), menu.screen.text()[-2000:]
    menu.send("LORA_RR\r")
    menu.wait_for(lambda _: "LORA_RR: unknown field (did you mean LORA_R?)" in menu.screen.visible(), "the guess")
    menu.send("\x7f\x7f\x7f\x7f\x7f\x7f\x7f\r")
    menu.wait_for(lambda _: menu.screen.visible().rstrip().endswith("Select [1-9]:"), "the main menu")
    menu.choose("9")
    assert menu.wait_exit() == 0


class _FakeClient:
    def __init__(self, *_args: object, **_kwargs: object) -> None:
        pass

    def __enter__(self) -> _FakeClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        pass

    def call(self, _name: str) -> dict[str, Any]:
        return {"run_id": "run_20260101_000000_0123abcd", "status": "running", "pause_requested": True,
                "current_round": 1, "total_rounds": 2, "current_stage": "generate"}  # fmt: skip


def test_the_menus_status_line_shows_a_pending_pause(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class _Info:
        pid = 4242

    monkeypatch.setattr(interactive, "find_supervisor", lambda *_a, **_k: _Info())
    monkeypatch.setattr(interactive, "ControlClient", _FakeClient)
    line = interactive.Menu(Controller(home), session=None).headline()
    assert "running · ⏸ pause requested · round 1/2" in line, line
