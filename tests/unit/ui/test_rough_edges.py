"""What a new user trips over on screen and in the API: pure functions, drawn from frozen frames."""

from __future__ import annotations

from ui_builders import RUN_ID, make_events, make_frame, make_state, screen

from heidi_engine.bus.state import RunState, TrainerState
from heidi_engine.ui.dashboard.app import UiState, handle_key
from heidi_engine.ui.dashboard.frame import Link
from heidi_engine.ui.http.metrics import exposition
from heidi_engine.ui.status_view import Health, format_status, status_fields
from heidi_engine.ui.viewer import View

NOISY_COST = 0.0017549999999999998  # 0.000585 * 3 in binary floating point


def test_a_gone_supervisor_is_not_shown_as_running() -> None:
    exited = screen(make_frame(link=Link("live", False, 4.0, "no heartbeat", 7, down="exited")))
    assert "SUPERVISOR DOWN" in exited and "RUNNING" not in exited
    assert "supervisor not running (its process exited)" in exited
    silent = screen(make_frame(link=Link("live", False, 4.0, "no heartbeat", 7, down="silent")))
    assert "UNKNOWN" in silent and "RUNNING" not in silent and "supervisor not reachable" in silent
    clean = screen(make_frame(state=make_state(status="stopped"), link=Link("live", False, 4.0, None, 7, down="shut down")))
    assert "supervisor not running (shut down)" in clean and "not reachable" not in clean and "STOPPED" in clean
    live = screen(make_frame())
    assert "RUNNING" in live and "DOWN" not in live


def test_the_http_server_being_down_is_in_the_header_and_footer() -> None:
    state = make_state(http_error="HTTP status server on http://127.0.0.1:7779 is down (exited with exit code 1)")
    text = screen(make_frame(state=state))
    assert "HTTP down" in text.splitlines()[0] and "exit code 1" in text


def test_an_interrupted_run_shows_how_to_continue_it() -> None:
    text = screen(make_frame(state=make_state(status="interrupted", current_stage="generate")))
    assert "INTERRUPTED" in text and f"autotrain-menu --resume-run {RUN_ID} continues it" in text
    status = {"run_id": RUN_ID, "status": "interrupted", "pid": 7, "uptime_s": 3725.3, "current_round": 1}
    shown = format_status(status)
    assert f"autotrain-menu --resume-run {RUN_ID}" in shown and "up 1h 02m 05s" in shown
    assert "resume-run" not in format_status({**status, "status": "completed"})


def test_status_says_when_the_http_server_is_down() -> None:
    shown = format_status({"run_id": None, "status": "idle", "pid": 7, "uptime_s": 1,
                           "http": {"url": "http://127.0.0.1:7779", "pid": None, "error": "port in use"}})
    assert "DOWN: port in use" in shown


def test_the_trainer_panel_resets_when_a_round_starts_training() -> None:
    stale = TrainerState(round=2, step=4, total=4, loss=0.5, loss_history=[(4, 0.5)])
    state = make_state(current_round=3, current_stage="train", trainer=stale)
    text = screen(make_frame(state=state, view=3))
    assert "round 3 · loading the model…" in text and "100%" not in text and "4/4" not in text
    overview = screen(make_frame(state=state, view=1))
    assert "loading the model…" in overview and "4/4" not in overview
    first = make_state(current_round=1, current_stage="train", trainer=TrainerState())
    assert "round 1 · loading the model…" in screen(make_frame(state=first, view=3))


def test_one_loss_point_is_not_plural() -> None:
    state = make_state(trainer=TrainerState(round=2, step=1, total=4, loss=0.5, loss_history=[(1, 0.5)]))
    text = screen(make_frame(state=state, view=3))
    assert "1 point" in text and "1 points" not in text


def test_costs_are_rounded_at_the_output_edge_only() -> None:
    state = RunState(run_id=RUN_ID, status="running")
    state.usage["estimated_cost_usd"] = NOISY_COST
    fields = status_fields(state, Health("ok"))
    assert fields["usage"]["estimated_cost_usd"] == 0.001755
    assert state.usage["estimated_cost_usd"] == NOISY_COST  # the state keeps the exact sum
    text = exposition(lambda: (View(state, 1, True, 0.1, None), Health("ok"))).decode()
    assert "autotrain_teacher_cost_usd_total 0.001755\n" in text and "99999" not in text
    state.usage["estimated_cost_usd"] = None
    assert status_fields(state, Health("ok"))["usage"]["estimated_cost_usd"] is None


def test_the_filter_prompt_opens_empty() -> None:
    ui = UiState(view=4)
    for key in ("/", "e", "r", "enter", "/"):
        handle_key(ui, key, 10)
    assert ui.cursor.prompt == "" and ui.cursor.filter == "er"
    assert "in force: er" in screen(make_frame(view=4, cursor=ui.cursor))


def test_a_trailing_slash_names_the_same_route() -> None:
    from heidi_engine.ui.http.server import route

    assert route("/status/") == "/status" and route("/status/?x=1") == "/status"
    assert route("/") == "/" and route("//") == "/" and route("/health") == "/health"


def test_small_terminals_keep_the_counts_and_every_view_scrolls() -> None:
    narrow = screen(make_frame(view=1), width=60, height=16)
    counters = [line for line in narrow.splitlines() if "teacher…" in line or "train_s…" in line]
    assert counters and all(any(ch.isdigit() for ch in line.split("│")[1]) for line in counters), narrow
    assert "120" in narrow and "150" in narrow and "RUNNING" in narrow
    state = make_state()
    state.config.update({f"EXTRA_SETTING_{i}": i for i in range(40)})
    ui = UiState(view=5)
    first = screen(make_frame(state=state, view=5, cursor=ui.cursor), width=80, height=24)
    assert "enlarge the terminal" not in first and "EXTRA_SETTING_39" not in first and "↓" in first
    for key in ("G",):
        handle_key(ui, key, 10)
    last = screen(make_frame(state=state, view=5, cursor=ui.cursor), width=80, height=24)
    assert "EXTRA_SETTING_39" in last and "more ·" not in last
    handle_key(ui, "1", 10)
    assert ui.cursor.offset == 0  # another view starts at its top


def test_enter_shows_the_selected_event_in_full() -> None:
    long = "step " + "abcdefghij" * 30 + " THE END"
    events = (*make_events(20), {**make_events(1)[0], "message": long, "level": "error", "error": "boom"})
    ui = UiState(view=4)
    cut = screen(make_frame(view=4, events=events, cursor=ui.cursor), width=80, height=24)
    assert "THE END" not in cut
    handle_key(ui, "enter", 10)
    full = screen(make_frame(view=4, events=events, cursor=ui.cursor), width=80, height=24)
    assert "Event in full" in full and "THE END" in full and "error: boom" in full
    assert "".join(full.replace("│", "").split()).count("abcdefghij" * 30) == 1  # the whole message
    handle_key(ui, "esc", 10)
    assert not ui.cursor.detail
