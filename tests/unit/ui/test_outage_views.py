"""A parked teacher in every view, from constructed states: the dashboard's header, Overview and Teacher
view, the HTTP status and health, the menu's status lines and /metrics; and unknown throughput as unknown."""

from __future__ import annotations

import shutil
import subprocess
from datetime import datetime, timezone

import pytest
from prometheus_client.parser import text_string_to_metric_families
from ui_builders import busy_state, make_frame, make_state, screen, view

from heidi_engine.bus.outage import TeacherOutage
from heidi_engine.bus.state import RunState
from heidi_engine.ui.dashboard.frame import Rates
from heidi_engine.ui.http.metrics import exposition
from heidi_engine.ui.status_view import Health, assess, format_status, status_fields

SINCE = "2024-02-15T12:35:00Z"  # the builders' clock reads 12:40:00
KEY = "sk-proj-Q3xv9LmT2aZkR8pWc1NbYh4dJf7GsE0u"
OUTAGE = TeacherOutage(state="parked", since=SINCE, retry_every_s=30.0, next_probe_at="2024-02-15T12:40:12Z",
                       jobs_waiting=3, reason=f"HTTP 503: The server is overloaded ({KEY})")  # fmt: skip


def parked(state: RunState | None = None) -> RunState:
    state = state or make_state(current_stage="generate")
    state.teacher_outage = OUTAGE
    return state


def test_the_header_says_since_when_on_every_view() -> None:
    for number in (1, 2, 3, 4):
        text = screen(make_frame(state=parked(), view=number), width=140)
        assert "⚠ teacher unreachable since 12:35:00 UTC (5m 00s)" in text, text
    assert "teacher unreachable" not in screen(make_frame(), width=140)


def test_the_overview_says_it_under_teacher() -> None:
    text = screen(make_frame(state=parked()), width=160)
    assert "unreachable since 12:35:00 UTC (5m 00s) · a probe every 30 s, next in 12s" in text, text


def test_the_teacher_view_leads_with_the_outage_and_its_last_error() -> None:
    text = screen(make_frame(state=parked(), view=2), width=160)
    assert "teacher unreachable since 12:35:00 UTC (5m 00s) · a probe every 30 s, next in 12s · 3 sample(s) waiting" in text
    assert "last error HTTP 503: The server is overloaded" in text and KEY not in text
    assert text.index("teacher unreachable") < text.index("requests sent")


def test_health_status_and_the_menus_status_say_teacher_unreachable() -> None:
    state = parked(busy_state())
    health = assess(view(state), None)
    assert (health.state, health.reason, health.http_status) == ("degraded", f"teacher unreachable since {SINCE}", 503)
    assert status_fields(state, health)["health"] == f"degraded: teacher unreachable since {SINCE}"
    state.problem = "cannot write state.json: No space left on device"
    both = assess(view(state), None).reason
    assert both == f"cannot write state.json: No space left on device; teacher unreachable since {SINCE}"
    answer = {"run_id": state.run_id, "status": "running", "pid": 1, "uptime_s": 3.0,
              "health_reason": f"teacher unreachable since {SINCE}",
              "teacher_outage": OUTAGE.model_dump(exclude={"state"})}  # fmt: skip
    text = format_status(answer)
    assert f"health      degraded: teacher unreachable since {SINCE}" in text
    assert (f"teacher     unreachable since {SINCE} · a probe every 30 s, next at 2024-02-15T12:40:12Z · "
            "3 sample(s) waiting · last error: HTTP 503") in text and KEY not in text  # fmt: skip
    assert "teacher " not in format_status({**answer, "health_reason": None, "teacher_outage": None})


def _samples(state: RunState) -> dict[str, float]:
    text = exposition(lambda: (view(state), assess(view(state), None)))
    families = text_string_to_metric_families(text.decode())
    return {s.name: s.value for family in families for s in family.samples if not s.labels}


def test_metrics_gauge_the_outage_and_leave_out_its_times_while_reachable() -> None:
    samples = _samples(parked(busy_state()))
    assert samples["autotrain_teacher_parked"] == 1.0
    assert samples["autotrain_up"] == 1.0  # the supervisor is up: AutoTrainSupervisorDown must not fire
    since, probe = (datetime(2024, 2, 15, 12, *at, tzinfo=timezone.utc).timestamp() for at in ((35, 0), (40, 12)))
    assert samples["autotrain_teacher_parked_since_timestamp_seconds"] == since
    assert samples["autotrain_teacher_next_probe_timestamp_seconds"] == probe
    samples = _samples(busy_state())
    assert samples["autotrain_teacher_parked"] == 0.0
    assert "autotrain_teacher_parked_since_timestamp_seconds" not in samples
    assert "autotrain_teacher_next_probe_timestamp_seconds" not in samples


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian package prometheus) not installed")
def test_promtool_accepts_the_outage_gauges() -> None:
    state = parked(busy_state())
    text = exposition(lambda: (view(state), Health("degraded", OUTAGE.describe())))
    check = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, timeout=60, check=False)
    assert check.returncode == 0 and not check.stdout and not check.stderr, (check.stdout, check.stderr)


def test_replies_without_usage_make_the_token_rates_unknown_not_zero() -> None:
    rates = Rates(requests_s=2.0, input_tokens_s=0.0, output_tokens_s=0.0, generated_s=2.0)
    text = screen(make_frame(view=2, rates=rates), width=140)
    lines = {line.split("  ")[0].strip("│ "): line for line in text.splitlines() if "tokens" in line}
    for name in ("input tokens", "output tokens", "total tokens"):
        assert "tok/s" not in lines[name] and "–" in lines[name], lines[name]
    idle = screen(make_frame(view=2, rates=Rates(requests_s=0.0, input_tokens_s=0.0, output_tokens_s=0.0,
                                                 generated_s=0.0)), width=140)  # fmt: skip
    assert "0.0 tok/s" in idle  # nothing came back: no tokens per second is the truth
