"""Dashboard control keys without a terminal: Tab and arrows cycle views; p/u/s and the stop question."""

from __future__ import annotations

from pathlib import Path

from heidi_engine.ui.dashboard.app import UiState, handle_key
from heidi_engine.ui.dashboard.controls import RunControl
from heidi_engine.ui.dashboard.frame import VIEWS
from heidi_engine.ui.dashboard.keys import KeyParser


def test_tab_and_arrows_are_keys_that_cycle_the_views() -> None:
    assert KeyParser().feed(b"\t\x1b[Z\x1b[C\x1b[D") == ["tab", "backtab", "right", "left"]
    ui = UiState(view=1, help=True)
    handle_key(ui, "tab", 10)
    assert (ui.view, ui.help) == (2, False)
    handle_key(ui, "left", 10)
    handle_key(ui, "backtab", 10)
    assert ui.view == len(VIEWS)
    handle_key(ui, "right", 10)
    assert ui.view == 1


def test_stop_asks_first_and_a_missing_supervisor_is_said(tmp_path: Path) -> None:
    control = RunControl(tmp_path)
    assert not control.key("x") and control.notice() is None
    assert control.key("s") and control.notice() == "stop the run at its next stage boundary? y/n"
    assert control.key("n") and control.notice() == "stop cancelled: the run goes on"
    assert control.key("s") and control.key("y")
    control.wait()
    notice = control.notice()
    assert notice is not None and notice.startswith("stop: no supervisor reachable"), notice
    assert control.key("p")
    control.wait()
    assert str(control.notice()).startswith("pause: no supervisor reachable")
