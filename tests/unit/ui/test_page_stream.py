"""The browser page's data, without sockets: the allow-list and edge redaction, the stream's frames and
resumes, the time series' bounds, and the control gate's every refusal."""

from __future__ import annotations

import io
import json
from dataclasses import replace
from typing import Any

import orjson
import pytest
from ui_builders import SECRET, make_events, make_state, view

from heidi_engine.bus.redaction import default_redactor
from heidi_engine.bus.state import AgentInfo, EvalSample, EvalScores, RunState
from heidi_engine.ui.http.control import ControlGate
from heidi_engine.ui.http.page_data import PAGE_FIELDS, Projector, config_rows, page_events
from heidi_engine.ui.http.stream import RING, PageFeed, Series
from heidi_engine.ui.status_view import Health
from heidi_engine.ui.viewer import View

PORT = 7779
ORIGIN = f"http://127.0.0.1:{PORT}"


class Views:
    """A stand-in for the LiveView: the test sets the view the feed reads next."""

    def __init__(self, current: View) -> None:
        self.current = current

    def latest(self) -> View:
        return self.current


def _feed(state: RunState, events: tuple[dict[str, Any], ...] = ()) -> tuple[PageFeed, Views]:
    views = Views(replace(view(state), events=events))
    return PageFeed(views, lambda: Health("ok")), views


def _frames(data: bytes) -> list[tuple[str | None, str, dict[str, Any]]]:
    """``(id, event, data)`` of each frame in an SSE byte stream (retry lines and pings left out)."""
    frames = []
    for block in data.decode().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "event" in fields and fields["event"] != "ping":
            frames.append((fields.get("id"), fields["event"], json.loads(fields["data"])))
    return frames


def _serve_once(feed: PageFeed, last_id: str | None) -> list[tuple[str | None, str, dict[str, Any]]]:
    """What a tab that connects with ``last_id`` is sent at once: the feed is stopped first, so the serving
    ends after its first write (which holds the snapshot, or every frame after ``last_id``)."""
    out = io.BytesIO()
    feed.close()
    try:
        feed.serve(out, last_id, lambda body: body.__setitem__("control", False))
    finally:
        feed._stop.clear()
    return _frames(out.getvalue())


def test_projection_is_the_allow_list_redacted_and_json_safe() -> None:
    state = make_state(error=f"teacher said {SECRET}", best_adapter="out_lora_round_2")
    state.config["TEACHER_API_KEY"] = "hunter2-matches-no-pattern"  # hidden by its key's name
    state.config["NOTE"] = f"key {SECRET} here"
    state.usage["estimated_cost_usd"] = float("nan")
    state.agents = {"train": AgentInfo(stage="train", pid=4321, pgid=4321, phase="running")}
    fields = Projector().changed(state)
    assert tuple(fields) == PAGE_FIELDS
    text = orjson.dumps(fields).decode()
    assert SECRET not in text and "sk-proj" not in text and "hunter2" not in text
    assert fields["usage"]["estimated_cost_usd"] is None  # NaN is not JSON
    assert fields["agents"] == {"train": {"stage": "train", "phase": "running", "restarts": 0}}  # no pid
    assert fields["trainer"]["loss_history"][0] == [1, pytest.approx(2.0 / 1.05)]
    rows = {row["key"]: row for row in fields["config"]}
    assert rows["TEACHER_API_KEY"]["value"].startswith("[REDACTED") and "[REDACTED" in rows["NOTE"]["value"]


def test_projection_sends_only_what_changed() -> None:
    projector, state = Projector(), make_state()
    projector.changed(state)
    assert projector.changed(state) == {}
    state.counters = {**state.counters, "teacher_generated": 121}
    assert set(projector.changed(state)) == {"counters"}
    state.evals = [EvalSample(round=1, adapter=EvalScores(val_pass_at_1=0.5, n_val=10, val_passed=5))]
    changed = projector.changed(state)
    assert set(changed) == {"evals", "outcome"} and changed["outcome"]
    assert projector.current()["counters"]["teacher_generated"] == 121


def test_config_sources_default_file_and_elsewhere(tmp_path: Any) -> None:
    config_file = tmp_path / "config.yaml"
    config_file.write_text("ROUNDS: 4\nSEED: 7\nTEACHER_BASE_URL: https://user:hunter2@teacher.example/v1\n")
    # The run's own copy of its configuration holds the URL already redacted.
    redacted_url = default_redactor().redact("https://user:hunter2@teacher.example/v1")
    assert "hunter2" not in redacted_url
    rows = config_rows({"ROUNDS": 4, "SEED": 9, "TRAIN_STEPS": 200, "LORA_R": 64, "TEACHER_BASE_URL": redacted_url},
                       config_file)  # fmt: skip
    sources = {row["key"]: row["source"] for row in rows}
    assert sources["TEACHER_BASE_URL"] == "config.yaml"
    defaults = {key: field.default for key, field in __import__(
        "heidi_engine.bus.config", fromlist=["AutoTrainConfig"]).AutoTrainConfig.model_fields.items()}
    assert sources["ROUNDS"] == "config.yaml"
    assert sources["SEED"] == "environment or --set"  # the file says 7, the run ran with 9
    assert sources["TRAIN_STEPS"] == ("default" if defaults["TRAIN_STEPS"] == 200 else "environment or --set")
    assert sources["LORA_R"] == ("default" if defaults["LORA_R"] == 64 else "environment or --set")


def test_page_events_keep_the_shown_keys_redacted_and_drop_markers() -> None:
    records = [*make_events(2, message=f"leak {SECRET}", run_id="x"), {"left_out": 5, "before": 9}]
    shown = page_events(records)
    assert len(shown) == 2 and "run_id" not in shown[0] and SECRET not in json.dumps(shown)


def test_series_stays_bounded_and_spans_the_whole_run() -> None:
    series = Series(limit=10)
    for i in range(1000):
        series.offer([i])
    assert len(series.points) <= 10
    assert series.points[0] == [0] and series.points[-1][0] > 800


def test_a_delta_carries_changed_fields_new_events_and_what_it_left_out() -> None:
    state = make_state(event_count=3)
    feed, views = _feed(state, make_events(3))
    feed.step()
    snap = feed.snapshot()
    assert snap["first"] == 1 and len(snap["events"]) == 3 and set(snap["state"]) == set(PAGE_FIELDS)
    # 400 more events, of which the view holds 250 after a marker for the 150 it never got.
    grown = state.model_copy(update={"event_count": 403, "counters": {**state.counters, "test_pass": 99}})
    events = (*make_events(3), {"left_out": 150, "before": 154}, *make_events(250))
    views.current = replace(view(grown), events=events)
    assert feed.step()
    assert not feed.step()  # the same view: no frame
    frames = _serve_once(feed, f"{feed.epoch}-1")
    assert [kind for _id, kind, _data in frames] == ["delta"]
    frame_id, _kind, delta = frames[0]
    assert frame_id == f"{feed.epoch}-2"
    assert set(delta["fields"]) == {"counters", "event_count"}
    assert len(delta["events"]) == 200 and delta["first"] == 204 and delta["left_out"] == 200


def test_a_reconnect_resumes_within_the_ring_and_takes_a_snapshot_otherwise() -> None:
    state = make_state()
    feed, views = _feed(state)
    for n in range(RING + 5):
        views.current = view(state.model_copy(update={"event_count": n + 1}))
        feed.step()
    newest = feed.stream_id()
    assert _serve_once(feed, newest) == []  # up to date: nothing to send
    feed, views = _feed(state)
    for n in range(RING + 5):
        views.current = view(state.model_copy(update={"event_count": n + 1}))
        feed.step()
    kinds = [kind for _id, kind, _d in _serve_once(feed, f"{feed.epoch}-2")]  # older than the ring holds
    assert kinds == ["snapshot"]
    feed, _views = _feed(state)
    feed.step()
    for stale in (None, "", "garbage", "0000-1", f"{feed.epoch}-99"):
        frames = _serve_once(feed, stale)
        assert [kind for _id, kind, _d in frames] == ["snapshot"], stale
        assert frames[0][2]["control"] is False


def test_a_new_run_puts_a_snapshot_in_the_stream() -> None:
    state = make_state(event_count=50)
    feed, views = _feed(state)
    feed.step()
    views.current = view(make_state(run_id="run_20240216_000000_feedbeef", event_count=2))
    feed.step()
    frames = _serve_once(feed, f"{feed.epoch}-1")
    assert [kind for _id, kind, _d in frames] == ["snapshot"]
    assert frames[0][2]["state"]["run_id"] == "run_20240216_000000_feedbeef"


def _headers(**given: str) -> dict[str, str]:
    base = {"Host": f"127.0.0.1:{PORT}", "Origin": ORIGIN, "Sec-Fetch-Site": "same-origin"}
    base.update(given)
    return {key: value for key, value in base.items() if value != "-"}


def test_the_gate_lets_through_only_the_token_holder_from_this_origin() -> None:
    gate = ControlGate.with_new_token(PORT)
    cookie = f"{gate.cookie}={gate.token}"
    assert gate.refusal(_headers(Cookie=cookie)) is None
    assert gate.refusal(_headers(Cookie=f"theme=dark; {cookie}", Host=f"localhost:{PORT}",
                                 Origin=f"http://localhost:{PORT}")) is None  # fmt: skip
    refused = {
        "no cookie": _headers(),
        "wrong token": _headers(Cookie=f"{gate.cookie}=x{gate.token}"),
        "another server's cookie": _headers(Cookie=f"autotrain_control_1={gate.token}"),
        "another origin": _headers(Cookie=cookie, Origin="http://evil.example"),
        "another port": _headers(Cookie=cookie, Origin="http://127.0.0.1:1"),
        "no origin": _headers(Cookie=cookie, Origin="-"),
        "null origin": _headers(Cookie=cookie, Origin="null"),
        "cross-site fetch": _headers(Cookie=cookie, **{"Sec-Fetch-Site": "cross-site"}),
        "rebound host": _headers(Cookie=cookie, Host=f"evil.example:{PORT}"),
        "bad cookie header": _headers(Cookie='"\\'),
    }
    for case, headers in refused.items():
        assert gate.refusal(headers) is not None, case
    read_only = ControlGate(None, PORT)
    assert "read-only" in (read_only.refusal(_headers(Cookie=f"{read_only.cookie}=anything")) or "")
    assert not read_only.matches("") and not read_only.holds({"Cookie": f"{read_only.cookie}="})
    assert "HttpOnly" in gate.set_cookie() and "SameSite=Strict" in gate.set_cookie()


def test_the_token_file_is_private_and_goes_with_the_server(tmp_path: Any) -> None:
    gate = ControlGate.with_new_token(PORT)
    path = gate.write_token(tmp_path)
    assert path.read_text().strip() == gate.token and path.stat().st_mode & 0o077 == 0
    ControlGate.remove_token(tmp_path)
    ControlGate.remove_token(tmp_path)  # twice: nothing to remove is fine
    assert not path.exists()
