"""The run driver's state machine on a fake clock: backoff, pause and stop during it, hang detection,
the drain of an exited agent's last events, permanent failures and a full disk. No process is started:
agents are fakes whose exit the test decides."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from heidi_engine.bus.exit_status import EXIT_FATAL, EXIT_NOSPACE, EXIT_STOPPED
from heidi_engine.bus.state import RunState
from heidi_engine.supervisor.pipeline import DRAIN_S, NOSPACE_RETRY_S, DriverSettings, Pipeline, backoff_s
from heidi_engine.supervisor.process import AgentProcess


class FakeAgent(AgentProcess):
    """An agent whose exit code the test sets; signals are recorded, not sent."""

    def __init__(self, stage: str, now: float, attempt: int) -> None:
        super().__init__(stage, None, now, now, attempt)  # type: ignore[arg-type]
        self.code: int | None = None
        self.signals: list[str] = []
        self.fake_pid = 10_000 + attempt

    @property
    def pid(self) -> int:
        return self.fake_pid

    def poll(self) -> int | None:
        return self.code

    def begin_terminate(self, grace_s: float, now: float) -> None:
        if self.kill_deadline is None:
            self.signals.append("TERM")
            self.kill_deadline = now + grace_s

    def escalate(self, now: float) -> None:
        if self.kill_deadline is not None and now >= self.kill_deadline:
            self.signals.append("KILL")
            self.code = -9


class Host:
    """The supervisor side of the driver: records what it is told."""

    def __init__(self) -> None:
        self.state = RunState(run_id="run_20240101_000000_0123abcd", status="running")
        self.events: list[tuple[str, str, str, str]] = []
        self.finished: tuple[str, str | None] | None = None
        self.problems: dict[str, str | None] = {}
        self.lost: dict[str, int] = {}  # undelivered messages by sender, as the bus's receipts would say

    def emit(self, stage: str, event_type: str, *, round_no: int, level: str = "info", message: str = "",
             error: str | None = None) -> None:
        self.events.append((stage, event_type, level, message))

    def set_status(self, **fields: object) -> None:
        for name, value in fields.items():
            setattr(self.state, name, value)

    def finish_run(self, status: str, message: str, *, error: str | None = None) -> None:
        self.finished = (status, error)

    def stage_completed(self, stage: str, round_no: int) -> None:
        pass

    def agents_changed(self, agents: Mapping[str, AgentProcess]) -> None:
        pass

    def report_problem(self, site: str, problem: str | None) -> bool:
        changed = self.problems.get(site) != problem
        self.problems[site] = problem
        return changed

    def undelivered(self, sender: str) -> int:
        return self.lost.get(sender, 0)


class Driver:
    """A pipeline on a fake clock, with the agents it started."""

    def __init__(self, tmp_path: Path, *, rounds: int = 1, max_restarts: int = 2, heartbeat_timeout_s: float = 30.0) -> None:
        self.now = 1000.0
        self.host = Host()
        self.agents: list[FakeAgent] = []
        settings = DriverSettings(rounds=rounds, max_restarts=max_restarts,
                                  heartbeat_timeout_s=heartbeat_timeout_s, stop_grace_s=5.0)
        self.pipeline = Pipeline(self.host, settings, run_dir=tmp_path, argv_for=lambda stage: ["true"],
                                 env_for=lambda stage, r, a: {}, spawner=self._spawn)

    def _spawn(self, stage: str, argv: Any, *, attempt: int, now: float, **_: Any) -> FakeAgent:
        agent = FakeAgent(stage, now, attempt)
        self.agents.append(agent)
        return agent

    def tick(self, advance: float = 0.0) -> None:
        self.now += advance
        self.pipeline.tick(self.now)

    @property
    def agent(self) -> FakeAgent:
        return self.agents[-1]

    def crash(self, code: int = 3) -> None:
        self.agent.code = code
        self.tick()

    def messages(self, level: str | None = None) -> list[str]:
        return [m for _, _, lvl, m in self.host.events if level is None or lvl == level]


@pytest.fixture
def driver(tmp_path: Path) -> Driver:
    d = Driver(tmp_path)
    d.tick()
    assert [a.stage for a in d.agents] == ["generate"]
    return d


def test_a_crash_restarts_after_backoff_and_the_bound_fails_the_run(driver: Driver) -> None:
    driver.crash()
    assert driver.pipeline.restart_at == driver.now + backoff_s(1)
    driver.tick(backoff_s(1) - 0.01)
    assert len(driver.agents) == 1  # not before the backoff is over
    driver.tick(0.01)
    assert len(driver.agents) == 2 and driver.agent.attempt == 1
    driver.crash()
    driver.tick(backoff_s(2))
    driver.crash()  # the third crash with max_restarts 2
    assert len(driver.agents) == 3 and driver.pipeline.agent is None  # and nothing started after it
    assert driver.host.finished is not None and driver.host.finished[0] == "failed"
    assert "generate agent failed 3 time(s); last: exit code 3" in (driver.host.finished[1] or "")


def test_stop_during_backoff_finishes_without_another_start(driver: Driver) -> None:
    driver.crash()
    driver.pipeline.request_stop(now=driver.now)
    driver.tick(100)
    assert len(driver.agents) == 1
    assert driver.host.finished == ("stopped", None)


def test_pause_during_backoff_holds_the_restart_until_resume(driver: Driver) -> None:
    driver.crash()
    driver.host.state.pause_requested = True
    assert driver.pipeline.parked  # nothing runs: the run shows paused at once
    driver.tick(100)
    assert len(driver.agents) == 1
    driver.host.state.pause_requested = False
    driver.tick()
    assert len(driver.agents) == 2 and driver.host.finished is None


def test_a_silent_agent_is_terminated_as_hung_then_killed_and_restarted(tmp_path: Path) -> None:
    d = Driver(tmp_path, heartbeat_timeout_s=10.0)
    d.tick()
    d.pipeline.agent_seen("generate", None, None, d.now + 5)
    d.tick(14)  # heard 9 s ago
    assert d.agent.signals == []
    d.tick(2)  # 11 s of silence
    assert d.agent.signals == ["TERM"]
    d.tick(5)  # the grace period is over
    assert d.agent.signals == ["TERM", "KILL"]
    d.tick()
    assert any("silent for 11 s" in m for m in d.messages("warn"))
    d.tick(backoff_s(1))
    assert len(d.agents) == 2


def test_a_parked_agent_is_never_judged_silent(tmp_path: Path) -> None:
    d = Driver(tmp_path, heartbeat_timeout_s=10.0)
    d.tick()
    d.pipeline.agent_seen("generate", None, True, d.now)
    d.tick(3600)
    assert d.agent.signals == []


def test_an_exited_agent_is_drained_until_its_final_report_or_the_deadline(driver: Driver) -> None:
    driver.pipeline.agent_seen("generate", None, None, driver.now)  # it has spoken: its events may be in flight
    driver.agent.code = 0
    driver.tick()
    driver.tick(DRAIN_S - 1)
    assert [a.stage for a in driver.agents] == ["generate"]  # still waiting for the "done" report
    driver.tick(1)
    assert [a.stage for a in driver.agents] == ["generate", "validate"]
    assert any("exited without its final report" in m for m in driver.messages("warn"))
    assert ("generate", "stage_end", "success", "generate complete") in driver.host.events


def test_the_final_report_ends_the_drain_at_once(driver: Driver) -> None:
    driver.pipeline.agent_seen("generate", None, None, driver.now)
    driver.agent.code = 0
    driver.tick()
    driver.pipeline.agent_seen("generate", None, None, driver.now, done=True)
    driver.tick()
    assert [a.stage for a in driver.agents] == ["generate", "validate"] and not driver.messages("warn")


def test_what_an_agent_could_not_deliver_is_reported_with_its_count(driver: Driver) -> None:
    driver.host.lost[f"generate:{driver.agent.pid}"] = 3
    driver.pipeline.agent_seen("generate", None, None, driver.now)
    driver.agent.code = 0
    driver.tick()
    driver.pipeline.agent_seen("generate", None, None, driver.now, done=True)
    driver.tick()
    assert driver.messages("warn") == [
        "generate agent: 3 of its messages did not arrive; their events are missing (see logs/generate_round_1.log)"]


def test_a_drain_that_ends_without_the_report_says_how_many_never_came(driver: Driver) -> None:
    driver.host.lost[f"generate:{driver.agent.pid}"] = 59
    driver.pipeline.agent_seen("generate", None, None, driver.now)
    driver.agent.code = 0
    driver.tick()
    driver.tick(DRAIN_S)
    assert driver.messages("warn") == ["generate agent exited without its final report; 59 of its messages did "
                                       "not arrive (see logs/generate_round_1.log)"]


def test_exit_fatal_fails_the_run_without_a_restart(driver: Driver) -> None:
    driver.crash(EXIT_FATAL)
    driver.tick(100)
    assert len(driver.agents) == 1 and driver.pipeline.agent is None
    assert driver.host.finished is not None and driver.host.finished[0] == "failed"
    assert "failed permanently" in (driver.host.finished[1] or "")


def test_exit_stopped_without_a_stop_request_is_a_crash(driver: Driver) -> None:
    driver.crash(EXIT_STOPPED)
    assert driver.pipeline.restart_at is not None and driver.host.finished is None


def test_a_full_disk_retries_without_using_up_restarts_and_reports_the_problem(driver: Driver) -> None:
    for n in range(1, 6):  # more than max_restarts
        driver.crash(EXIT_NOSPACE)
        assert "no space left" in (driver.host.problems["generate"] or "")
        assert driver.pipeline.restart_at == driver.now + min(NOSPACE_RETRY_S, backoff_s(n))
        driver.tick(NOSPACE_RETRY_S)
    assert driver.host.finished is None and len(driver.agents) == 6
    assert driver.agent.attempt == 5  # each start resumes
    driver.crash(0)
    assert driver.host.problems["generate"] is None
    assert driver.agents[-1].stage == "validate"


def test_hold_keeps_an_agent_from_being_judged_silent(tmp_path: Path) -> None:
    d = Driver(tmp_path, heartbeat_timeout_s=10.0)
    d.tick()
    for _ in range(30):
        d.now += 1
        d.pipeline.hold(d.now)  # the supervisor cannot take its messages (a full disk)
    d.tick()
    assert d.agent.signals == []
