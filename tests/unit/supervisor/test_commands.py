"""Command handlers against a fake supervisor: every command has one handler, refusals are clear."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from heidi_engine.bus.clients import Client
from heidi_engine.bus.config import FIELD_NAMES, SUPERVISOR_START_FIELDS, WORK_SIZE_FIELDS
from heidi_engine.bus.message import Command
from heidi_engine.bus.state import RunState
from heidi_engine.supervisor.commands import COMMANDS, LEAST_ROLE, Refused, dispatch, help_text, refusal

RUN = "run_20240215_123456_abc12345"
EXPECTED = {"ping", "status", "snapshot", "start", "stop", "pause", "resume", "resume_run", "list_runs", "shutdown",
            "events"}


class FakeSupervisor:
    def __init__(self, status: str = "idle", *, pause_requested: bool = False) -> None:
        self.state = RunState(run_id=RUN if status != "idle" else None, status=status, pause_requested=pause_requested)  # type: ignore[arg-type]
        self.seq = 12
        self.session = "sess"
        self.calls: list[tuple[str, Any]] = []

    def stats(self) -> dict[str, Any]:
        return {"status": self.state.status}

    def snapshot(self) -> dict[str, Any]:
        return {"seq": self.seq, "session": self.session, "state": self.state.model_dump(mode="json")}

    def start_run(self, overrides: Mapping[str, object]) -> str:
        self.calls.append(("start", dict(overrides)))
        return RUN

    def request_stop(self) -> None:
        self.calls.append(("stop", None))

    def request_pause(self) -> None:
        self.calls.append(("pause", None))

    def request_resume(self) -> None:
        self.calls.append(("resume", None))

    def resume_run(self, run_id: str | None) -> str:
        self.calls.append(("resume_run", run_id))
        return run_id or RUN

    def list_runs(self) -> list[dict[str, Any]]:
        return [{"run_id": RUN}]

    def request_shutdown(self) -> None:
        self.calls.append(("shutdown", None))

    def events_page(self, run_id: str | None, before: int, limit: int) -> dict[str, Any]:
        self.calls.append(("events", (run_id, before, limit)))
        return {"run_id": RUN, "first": max(1, before - limit), "events": [], "more": False}


def test_every_command_has_exactly_one_handler_with_help() -> None:
    assert set(COMMANDS) == EXPECTED
    assert len(set(map(id, COMMANDS.values()))) == len(COMMANDS)
    for name in COMMANDS:
        assert len(help_text(name)) > 15, name


def test_unknown_command_refused() -> None:
    with pytest.raises(Refused, match="unknown command 'frobnicate'"):
        dispatch(FakeSupervisor(), "frobnicate", {})


def test_ping_and_snapshot() -> None:
    sup = FakeSupervisor()
    assert dispatch(sup, "ping", {})["pong"] is True
    snap = dispatch(sup, "snapshot", {})
    assert snap["seq"] == 12 and snap["state"]["status"] == "idle"


def test_start_when_idle_and_refused_when_active() -> None:
    sup = FakeSupervisor()
    assert dispatch(sup, "start", {"overrides": {"ROUNDS": "2"}}) == {"run_id": RUN}
    assert sup.calls == [("start", {"ROUNDS": "2"})]
    for status in ("starting", "running", "paused", "stopping"):
        with pytest.raises(Refused, match="already"):
            dispatch(FakeSupervisor(status), "start", {})


def test_start_argument_checks() -> None:
    with pytest.raises(Refused, match="unknown argument"):
        dispatch(FakeSupervisor(), "start", {"rounds": 3})
    with pytest.raises(Refused, match="mapping"):
        dispatch(FakeSupervisor(), "start", {"overrides": ["ROUNDS=3"]})


@pytest.mark.parametrize("field", sorted(SUPERVISOR_START_FIELDS))
def test_a_start_overriding_what_only_the_supervisors_start_reads_is_refused_saying_how(field: str) -> None:
    sup = FakeSupervisor()
    with pytest.raises(Refused) as refused:
        dispatch(sup, "start", {"overrides": {"ROUNDS": "2", field: "1"}})
    said = str(refused.value)
    assert said.startswith(f"{field} is read when the supervisor starts, not by a run: set it in config.yaml or "
                           f"AUTOTRAIN_{field} and restart the supervisor"), said  # fmt: skip
    assert "ROUNDS" not in said and sup.calls == []


def test_the_fields_only_a_supervisor_start_reads_are_those_its_command_line_reads() -> None:
    # A field read from the configuration the daemon loads at its start is one no run can change.
    cli = (Path(__file__).resolve().parents[3] / "supervisor" / "cli.py").read_text(encoding="utf-8")
    read = set(re.findall(r"base_config\.([A-Z_]+)", cli))
    assert read and read == set(SUPERVISOR_START_FIELDS) and read <= set(FIELD_NAMES)


@pytest.mark.parametrize("status", ["idle", "stopped", "completed", "failed", "interrupted"])
def test_stop_pause_resume_refused_without_active_run(status: str) -> None:
    sup = FakeSupervisor(status)
    for name in ("stop", "pause", "resume"):
        with pytest.raises(Refused):
            dispatch(sup, name, {})
    assert sup.calls == []


def test_pause_then_resume() -> None:
    sup = FakeSupervisor("running")
    dispatch(sup, "pause", {})
    with pytest.raises(Refused, match="not paused"):
        dispatch(FakeSupervisor("running"), "resume", {})
    with pytest.raises(Refused, match="already requested"):
        dispatch(FakeSupervisor("running", pause_requested=True), "pause", {})
    dispatch(FakeSupervisor("paused", pause_requested=True), "resume", {})
    assert sup.calls == [("pause", None)]


def test_stop_active_run() -> None:
    sup = FakeSupervisor("paused", pause_requested=True)
    dispatch(sup, "stop", {})
    assert sup.calls == [("stop", None)]


def test_resume_run_validates_run_id() -> None:
    sup = FakeSupervisor("stopped")
    with pytest.raises(Refused, match="not a run id"):
        dispatch(sup, "resume_run", {"run_id": "../../etc"})
    assert dispatch(sup, "resume_run", {"run_id": RUN}) == {"run_id": RUN}
    assert dispatch(sup, "resume_run", {}) == {"run_id": RUN}
    with pytest.raises(Refused, match="already"):
        dispatch(FakeSupervisor("running"), "resume_run", {})


@pytest.mark.parametrize("name", ["ping", "status", "snapshot", "stop", "pause", "resume", "list_runs"])
def test_no_arg_commands_refuse_arguments(name: str) -> None:
    with pytest.raises(Refused, match="takes no arguments"):
        dispatch(FakeSupervisor("running"), name, {"x": 1})


def test_events_pages_are_capped_and_their_arguments_checked() -> None:
    sup = FakeSupervisor("running")
    assert dispatch(sup, "events", {"before": 900, "limit": 500})["first"] == 400
    assert dispatch(sup, "events", {"before": 50, "run_id": RUN})["first"] == 1
    assert sup.calls == [("events", (None, 900, 500)), ("events", (RUN, 50, 200))]
    with pytest.raises(Refused, match="limit 501 is over the cap of 500 events a page"):
        dispatch(sup, "events", {"before": 900, "limit": 501})
    for bad in ({}, {"before": 0}, {"before": True}, {"before": "9"}, {"before": 9, "limit": 0}):
        with pytest.raises(Refused, match="must be a whole number of at least 1"):
            dispatch(sup, "events", bad)
    with pytest.raises(Refused, match="unknown argument"):
        dispatch(sup, "events", {"before": 9, "after": 1})
    with pytest.raises(Refused, match="not a run id"):
        dispatch(sup, "events", {"before": 9, "run_id": "../x"})
    assert len(sup.calls) == 2


def test_shutdown() -> None:
    sup = FakeSupervisor("running")
    assert dispatch(sup, "shutdown", {}) == {"shutting_down": True}
    assert sup.calls == [("shutdown", None)]
    for bad in ({"x": 1}, {"if_idle": "yes"}):
        with pytest.raises(Refused, match="shutdown takes only if_idle"):
            dispatch(sup, "shutdown", bad)
    # What a command that started the daemon for nothing asks: never while a run is active.
    with pytest.raises(Refused, match="a run is running"):
        dispatch(FakeSupervisor("running"), "shutdown", {"if_idle": True})
    idle = FakeSupervisor("stopped")
    assert dispatch(idle, "shutdown", {"if_idle": True}) == {"shutting_down": True}


# -- roles -----------------------------------------------------------------------------------------------


def _client(role: str) -> Client:
    return Client(name="laptop", role=role, public_key=b"k" * 40, key=b"s" * 32)


def _command(name: str, **args: Any) -> Command:
    return Command(id="1", name=name, args=args)


def test_every_command_has_a_least_role_and_an_unlisted_one_is_an_admins() -> None:
    assert set(LEAST_ROLE) == set(COMMANDS)
    assert refusal(_client("operator"), _command("future_command")) is not None
    assert refusal(_client("admin"), _command("future_command")) is None


@pytest.mark.parametrize(
    ("role", "allowed"),
    [("viewer", {"ping", "status", "snapshot", "list_runs", "events"}),
     ("operator", {"ping", "status", "snapshot", "list_runs", "events", "start", "stop", "pause", "resume",
                   "resume_run"}),
     ("admin", set(COMMANDS))],
)  # fmt: skip
def test_each_role_may_send_its_commands_and_is_told_why_not_the_others(role: str, allowed: set[str]) -> None:
    for name in COMMANDS:
        why = refusal(_client(role), _command(name))
        if name in allowed:
            assert why is None, (role, name, why)
        else:
            assert why is not None and f"{name} is not allowed for client laptop (role {role})" in why, why


def test_a_local_client_may_send_anything() -> None:
    assert refusal(None, _command("shutdown")) is None
    assert refusal(None, _command("start", overrides={"TEACHER_BASE_URL": "http://127.0.0.1:1/v1"})) is None


def test_an_operator_may_size_the_work_and_nothing_else() -> None:
    sized = {"ROUNDS": 2, "SAMPLES_PER_ROUND": 5, "TRAIN_STEPS": 9, "LEARNING_RATE": 1e-4, "SEED": 3}
    assert refusal(_client("operator"), _command("start", overrides=sized)) is None
    for field in sorted(set(FIELD_NAMES) - WORK_SIZE_FIELDS):
        why = refusal(_client("operator"), _command("start", overrides={**sized, field: "x"}))
        assert why is not None and why.startswith(f"overriding {field} is not allowed for client laptop"), why
    assert refusal(_client("admin"), _command("start", overrides={"SANDBOX": "none"})) is None
    assert set(FIELD_NAMES) >= WORK_SIZE_FIELDS
    assert not WORK_SIZE_FIELDS & {"TEACHER_BASE_URL", "TEACHER_MODEL", "TEACHER_API_KEY_ENV", "BASE_MODEL", "SANDBOX",
                                   "RUN_UNIT_TESTS", "TASK_SOURCE", "MAX_COST_USD", "REPORT_TO", "HTTP_PORT"}
