"""A parked teacher is a state you can see: the real generate agent under a real supervisor, against a fake
teacher on 127.0.0.1 that is down until the test brings it back.

While it is down, ``autotrain-menu --status [--json]``, ``/status``, ``/health``, ``/metrics`` and the
dashboard (a tmux pane) say "teacher unreachable since …"; once it is back they say nothing of it while the
stage goes on. The client's probes are one request each, each at least the park interval after the one
before (counted at the server, never timed against a speed).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from fakes.openai_server import FakeOpenAIServer
from harness import FileRuntime, HttpProc, SupervisorProc, agent_env, scripted, wait_until
from tmux_pane import Pane

from heidi_engine.agents import generate
from heidi_engine.bus.config import load_config
from heidi_engine.bus.state import TeacherSample

pytestmark = pytest.mark.timeout(180)

MENU = [sys.executable, "-m", "heidi_engine.ui.menu_cli"]
KEY = "sk-test-FAKEKEY-0123456789abcdefXYZ"
RETRIES = 2
CONFIG = {
    "ROUNDS": 1,
    "SAMPLES_PER_ROUND": 2000,  # at the server's latency, the stage is still generating when the checks end
    "TEACHER_CONCURRENCY": 1,
    "TEACHER_MAX_RETRIES": RETRIES,
    "TEACHER_PARK_INTERVAL_S": 1.0,
    "TEACHER_TIMEOUT_S": 10.0,
    "VAL_RATIO": 0.0,
}


class Teacher:
    """The fake server, down until :meth:`back`; notes when each refused request arrived."""

    def __init__(self, server: FakeOpenAIServer) -> None:
        self.server = server
        self.up = threading.Event()
        self.refused: list[float] = []
        server.down = self._down

    def _down(self) -> bool:
        if self.up.is_set():
            return False
        self.refused.append(time.monotonic())
        return True

    def back(self) -> None:
        self.up.set()


@pytest.fixture
def teacher() -> Iterator[Teacher]:
    with FakeOpenAIServer(latency_s=0.05) as server:
        yield Teacher(server)


@pytest.fixture
def parked(teacher: Teacher, start_supervisor: Callable[..., SupervisorProc]) -> SupervisorProc:
    """A supervisor whose run's generate stage is parked on the teacher."""
    values = {**CONFIG, "TEACHER_BASE_URL": teacher.server.url}
    config = "".join(f"{name}: {json.dumps(value)}\n" for name, value in values.items())
    env = {**agent_env(scripted("--events", "0"), generate=""), "OPENAI_API_KEY": KEY}
    sup = start_supervisor(env=env, config=config).wait_ready()
    sup.call("start")
    wait_until(lambda: sup.status()["teacher_outage"], 60, 0.1, "the generate stage parked", sup.evidence)
    return sup


def menu(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*MENU, "--home", str(home), *args], capture_output=True, text=True, timeout=60, check=False)


def _stop(sup: SupervisorProc) -> None:
    sup.call("stop")
    sup.wait_status("stopped", timeout_s=60)


def test_status_json_http_and_metrics_say_teacher_unreachable_until_it_is_back(
    home: Path, teacher: Teacher, parked: SupervisorProc, http_server: Callable[[], HttpProc]
) -> None:
    sup = parked
    said = json.loads(menu(home, "--status", "--json").stdout)
    assert said["health"] == "degraded" and said["problem"] is None, said
    assert re.fullmatch(r"teacher unreachable since \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", said["health_reason"]), said
    outage = said["teacher_outage"]
    assert outage["retry_every_s"] == 1.0 and outage["jobs_waiting"] == 1 and "HTTP 503" in outage["reason"]
    assert outage["since"] in said["health_reason"] and outage["next_probe_at"] >= outage["since"]
    human = menu(home, "--status").stdout
    assert f"degraded: teacher unreachable since {outage['since']}" in human, human
    assert re.search(rf"teacher +unreachable since {outage['since']} · a probe every 1 s, next at ", human), human

    server = http_server()
    wait_until(lambda: server.get("/status").json()["health"] == f"degraded: teacher unreachable since {outage['since']}",
               15, 0.1, "/status degraded by the teacher", sup.evidence)  # fmt: skip
    health = server.get("/health")
    assert health.status == 503 and health.json()["reason"] == f"teacher unreachable since {outage['since']}"
    metrics = server.get("/metrics").body.decode()
    assert "autotrain_teacher_parked 1.0" in metrics and "autotrain_up 1.0" in metrics  # the supervisor is up
    assert re.search(r"^autotrain_teacher_parked_since_timestamp_seconds \d", metrics, re.M), metrics
    assert re.search(r"^autotrain_teacher_next_probe_timestamp_seconds \d", metrics, re.M), metrics
    wait_until(lambda: len(teacher.refused) >= 1 + RETRIES + 3, 30, 0.1, "three probes", sup.evidence)

    teacher.back()
    wait_until(lambda: server.get("/status").json()["health"] == "ok", 30, 0.1, "/status ok again", sup.evidence)
    said = json.loads(menu(home, "--status", "--json").stdout)
    assert said["health"] == "ok" and said["health_reason"] is None and said["teacher_outage"] is None, said
    assert said["status"] == "running" and said["current_stage"] == "generate"  # cleared by the probe, not an end
    assert "teacher" not in menu(home, "--status").stdout.replace("teacher_generated", "")
    metrics = server.get("/metrics").body.decode()
    assert "autotrain_teacher_parked 0.0" in metrics
    assert not re.search(r"^autotrain_teacher_parked_since_timestamp_seconds ", metrics, re.M)
    assert server.get("/health").status == 200

    # The first request spent its retries; after it, one request per probe, an interval or more apart.
    probes = teacher.refused[RETRIES:]
    assert all(later - earlier >= CONFIG["TEACHER_PARK_INTERVAL_S"] for earlier, later in pairwise(probes)), probes
    _stop(sup)


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_the_dashboard_says_teacher_unreachable_until_it_is_back(
    home: Path, teacher: Teacher, parked: SupervisorProc
) -> None:
    dash = Pane(["--home", str(home)])
    try:
        since = parked.status()["teacher_outage"]["since"][11:19]
        text = dash.wait((f"⚠ teacher unreachable since {since} UTC", "● live"), 15)
        assert "GENERATE" not in text  # the header shows the outage beside the stage, not instead of the run
        dash.key("2", (f"teacher unreachable since {since} UTC", "a probe every 1 s", "last error HTTP 503"))
        dash.key("1", "╭─ Pipeline")
        teacher.back()
        dash.wait(lambda screen: "⚠ teacher unreachable" not in screen and "● live" in screen, 30)
        dash.key("2", lambda screen: "a probe every" not in screen and "requests sent" in screen)
        assert parked.status()["current_stage"] == "generate"
    finally:
        dash.kill()
    _stop(parked)


def test_the_generate_stage_sends_its_outage_to_the_run_state(tmp_path: Path) -> None:
    with FakeOpenAIServer() as server:
        server.down = lambda: len(server.requests) <= 3
        values = {"TEACHER_BASE_URL": server.url, "SAMPLES_PER_ROUND": 4, "TEACHER_CONCURRENCY": 1, "VAL_RATIO": 0,
                  "TEACHER_MAX_RETRIES": 0, "TEACHER_PARK_INTERVAL_S": 1}  # fmt: skip
        config = load_config(None, env={}, overrides={k: str(v) for k, v in values.items()})
        runtime = FileRuntime(tmp_path, config, "generate")
        generate.main(runtime)  # type: ignore[arg-type]
    outages: list[Any] = [s.outage for s in runtime.samples if isinstance(s, TeacherSample) and s.outage]
    assert [o.state for o in outages] == ["parked", "parked", "parked", "recovered"], outages
    first = outages[0]
    assert first.retry_every_s == 1.0 and "HTTP 503" in first.reason and first.next_probe_at is not None
    assert len({o.since for o in outages}) == 1 and first.next_probe_at >= first.since
