"""Deterministic renders of every dashboard view from constructed states (no sockets, no clock)."""

from __future__ import annotations

import io

import pytest
from rich.console import Console
from ui_builders import RUN_ID, SECRET, make_events, make_frame, make_state, screen

from heidi_engine.bus.state import EndpointUsage, GpuInfo, RunState
from heidi_engine.ui.dashboard.frame import VIEWS, Cursor, Link
from heidi_engine.ui.dashboard.screen import render
from heidi_engine.ui.dashboard.views.events import event_line, event_window
from heidi_engine.ui.text import bar, fmt_cost, fmt_duration, fmt_pct, sparkline


def test_overview_shows_run_header_counters_with_rates_and_status() -> None:
    text = screen(make_frame(state=make_state(pause_requested=True)))
    assert RUN_ID in text
    assert "RUNNING" in text
    assert "round 2/3" in text
    assert "stage train" in text
    assert "elapsed 5m 04s" in text
    assert "pause requested" in text
    assert "stop requested" not in text
    assert "● live · seq 1,234" in text
    lines = {
        line.split()[1]: line for line in text.splitlines() if line.startswith("│ ") and len(line.split()) > 2
    }
    assert "120" in lines["teacher_generated"] and "2.4/s" in lines["teacher_generated"]
    assert "100" in lines["validated_ok"] and "83.3%" in lines["validated_ok"]  # 100 / 120 generated
    assert "80.0%" in lines["test_pass"]  # 80 / (80 + 20) tested
    assert "35.0%" in lines["eval_pass"]  # 7 / 20
    assert "requests 123 · 2.5/s" in text
    assert "tokens in 45,678 · out 23,456" in text
    assert "step 150/500" in text
    assert "train:running" in text
    assert "item 299" in text  # the most recent events


def test_overview_flags_a_stop_request_and_the_last_error() -> None:
    state = make_state(stop_requested=True, status="stopping", error="teacher failed: HTTP 500")
    text = screen(make_frame(state=state))
    assert "stop requested" in text and "STOPPING" in text
    assert "error: teacher failed: HTTP 500" in text


def test_elapsed_stops_at_the_last_update_once_finished() -> None:
    text = screen(make_frame(state=make_state(status="completed")))
    assert "COMPLETED" in text and "elapsed 4m 04s" in text


def test_teacher_view_shows_usage_live_rates_and_cost() -> None:
    state = make_state()
    state.config["MAX_COST_USD"] = 1.0
    text = screen(make_frame(state=state, view=2))
    assert "requests sent" in text and "123" in text and "2.5 req/s" in text
    assert "45,678" in text and "300 tok/s" in text
    assert "23,456" in text and "120 tok/s" in text
    assert "69,134" in text and "420 tok/s" in text
    assert "$0.0123" in text and "1.2% spent" in text
    assert "rate limits hit" in text and "1.6% of requests" in text  # 2 / 123
    assert "TEACHER_MODEL" in text and "gpt-4o-mini" in text


def test_teacher_view_shows_the_latest_generate_report_with_streaming_speed_or_parking() -> None:
    speed = "generate round 1: 6/12 written, 0 failed; time to first token 0.31 s, 42 tokens/s"
    events = (*make_events(4), {**make_events(1)[0], "stage": "generate", "message": speed})
    assert "time to first token 0.31 s, 42 tokens/s" in screen(make_frame(events=events, view=2), width=140)
    parked = "teacher unreachable since 2024-02-15T12:35:00Z, retrying every 30 s"
    events = (*events, {**make_events(1)[0], "stage": "generate", "level": "warn", "message": parked})
    assert parked in screen(make_frame(events=events, view=2), width=140)


def test_unknown_cost_reads_unknown_and_zero_reads_zero() -> None:
    state = make_state()
    state.usage["estimated_cost_usd"] = None
    unknown = screen(make_frame(state=state, view=2))
    assert "unknown" in unknown and "no price known" in unknown
    assert "$" not in unknown.split("estimated cost", 1)[1].splitlines()[0]
    state.usage["estimated_cost_usd"] = 0.0
    zero = screen(make_frame(state=state, view=2))
    assert "$0.0000" in zero and "unknown" not in zero
    assert "cost unknown" in screen(
        make_frame(state=make_state(usage={**state.usage, "estimated_cost_usd": None}))
    )


def test_trainer_view_progress_eta_loss_sparkline_and_gauges() -> None:
    text = screen(make_frame(view=3))
    assert "step 150/500" in text and "30%" in text
    assert "ETA 7m 17s" in text  # (500 - 150) steps at 0.8 steps/s
    assert "loss 0.53" in text and "150 points" in text
    spark = next(line for line in text.splitlines() if "▁" in line)
    assert "█" in spark  # the curve spans the full height
    assert "lr 2.00e-04" in text and "grad norm 1.25" in text and "tokens/s 850" in text


def test_trainer_view_shows_every_ranks_peak_memory() -> None:
    state = make_state()
    assert "peak memory" not in screen(make_frame(state=state, view=3))
    state.trainer.rank_peak_mb = [20480, 19968]
    assert "peak memory rank 0 20.0 GiB · rank 1 19.5 GiB" in screen(make_frame(state=state, view=3))


def test_trainer_prefers_the_trainer_eta() -> None:
    state = make_state()
    state.trainer.eta_s = 65.0
    assert "ETA 1m 05s" in screen(make_frame(state=state, view=3))


def test_no_gpu_is_said_plainly_with_host_cpu_and_ram() -> None:
    text = screen(make_frame(view=3))
    assert "Host (no GPU)" in text
    assert "no GPU · NVML Shared Library Not Found" in text
    assert "host CPU" in text and "35%" in text and "CPU █" in screen(make_frame())
    assert "host RAM" in text and "6.0 GiB/16.0 GiB" in text
    waiting = screen(make_frame(state=make_state(host=None, gpu_message=None), view=3))
    assert "no GPU" in waiting and "host CPU/RAM not reported yet" in waiting


def test_two_gpus_get_vram_and_utilisation_bars() -> None:
    gpus = [
        GpuInfo(
            index=0,
            name="NVIDIA H100 80GB HBM3",
            vram_used_mb=40960,
            vram_total_mb=81920,
            util_pct=87.0,
            temperature_c=64.0,
            power_w=300.0,
        ),
        GpuInfo(index=1, name="NVIDIA H100 80GB HBM3", vram_used_mb=8192, vram_total_mb=81920, util_pct=None),
    ]
    text = screen(make_frame(state=make_state(gpus=gpus, gpu_message=None), view=3), width=140)
    rows = [line for line in text.splitlines() if "VRAM" in line]
    assert len(rows) == 2
    assert "GPU0" in rows[0] and "40.0 GiB/80.0 GiB" in rows[0] and "87%" in rows[0] and "64°C" in rows[0]
    assert "█" in rows[0] and "░" in rows[0]
    assert "GPU1" in rows[1] and "8.0 GiB/80.0 GiB" in rows[1] and "–" in rows[1]  # no utilisation reading
    assert "no GPU" not in text
    overview = screen(make_frame(state=make_state(gpus=gpus, gpu_message=None)), width=140)
    assert "GPU0" in overview and "GPU1" in overview


def test_events_view_windows_the_log_and_colours_levels() -> None:
    frame = make_frame(view=4, events=make_events(5000))
    text = screen(frame, height=40)
    assert "Events 4,967–5,000 of 5,000 · following" in text
    assert "item 4999" in text and "item 4966" in text and "item 4965" not in text
    assert "WARN" in text and "ERROR" in text and "SUCCESS" in text
    styles = {
        level: {str(span.style) for span in event_line({"level": level, "message": "m"}, 100).spans}
        for level in ("info", "warn", "error", "success")
    }
    assert "bold red" in styles["error"] and "yellow" in styles["warn"] and "green" in styles["success"]


def test_events_view_scrolls_and_filters_on_stage_level_and_message() -> None:
    scrolled = screen(make_frame(view=4, cursor=Cursor(scroll=100)), height=40)
    assert "Events 167–200 of 300 · scrolled" in scrolled
    assert "item 199" in scrolled and "item 200" not in scrolled
    by_message = screen(make_frame(view=4, cursor=Cursor(filter="item 12")), height=40)
    assert "filter “item 12”" in by_message and "of 11" in by_message  # 12, 120-129
    by_level = screen(make_frame(view=4, cursor=Cursor(filter="ERROR")), height=40)
    rows = [line for line in by_level.splitlines() if line.startswith("│ 12:")]
    assert rows and all(" ERROR " in line for line in rows)
    by_stage = screen(make_frame(view=4, cursor=Cursor(filter="validate")), height=40)
    assert "of 150" in by_stage
    nothing = screen(make_frame(view=4, cursor=Cursor(filter="zzz")), height=40)
    assert "no event matches the filter" in nothing


def test_event_window_clamps_scroll_to_the_oldest_page() -> None:
    events = make_events(50)
    window = event_window(events, "", 10_000, 20)
    assert window.scroll == 30 and window.first == 1 and len(window.rows) == 20
    assert event_window(events, "", -5, 20).scroll == 0
    assert event_window((), "", 3, 20) == event_window((), "", 0, 20)


def test_filter_prompt_shows_typed_text_in_the_footer() -> None:
    text = screen(make_frame(view=4, cursor=Cursor(prompt="gener")), height=30)
    assert text.rstrip().splitlines()[-1].startswith("filter / gener")
    assert "Enter apply · Esc cancel" in text


def test_secret_in_an_event_message_never_reaches_the_screen() -> None:
    events = make_events(5, message=f"calling teacher with key {SECRET} \x1b[31mred\x1b[0m")
    for view in (1, 4):
        text = screen(make_frame(view=view, events=events), height=40)
        assert SECRET not in text
        assert "[REDACTED" in text
        assert "\x1b" not in text


def test_config_view_redacts_secrets_by_name_and_by_value() -> None:
    state = make_state()
    state.config.update(
        {
            "OPENAI_API_KEY": "hunter2hunter2",
            "EXTRA_HEADER": f"Bearer {SECRET}",
            "TEACHER_BASE_URL": "https://user:pa55word@example.com/v1",
        }
    )
    text = screen(make_frame(state=state, view=5), width=160)
    for secret in ("hunter2hunter2", SECRET, "pa55word"):
        assert secret not in text
    assert text.count("[REDACTED") >= 3
    assert "BASE_MODEL" in text and "smollm2-135m-instruct" in text
    assert "MAX_COST_USD" in text and "(empty)" in text


def test_config_view_before_any_run() -> None:
    text = screen(make_frame(state=RunState(), view=5))
    assert "no configuration yet" in text
    assert "no run yet" in text and "IDLE" in text


def test_unreachable_supervisor_is_said_with_the_silence() -> None:
    link = Link("live", False, 12.4, "no heartbeat", 1234)
    text = screen(make_frame(link=link))
    assert "supervisor not reachable · last heard 12 s ago" in text
    assert "not reachable: no heartbeat" in text
    never = screen(make_frame(link=Link("live", False, None, "no connection file", -1)))
    assert "never heard" in never


def test_replay_says_so() -> None:
    text = screen(make_frame(link=Link("replay", False, None, None, 0, f"runs/{RUN_ID}")))
    assert f"replay of runs/{RUN_ID} (files; no supervisor)" in text
    assert "not reachable" not in text


def test_help_lists_every_key() -> None:
    text = screen(make_frame(help=True), height=30)
    for key in ("q", "r", "1 … 6", "?", "PgUp PgDn", "Home End  g G", "/"):
        assert key in text
    assert "quit" in text and "filter" in text


@pytest.mark.parametrize(("width", "height"), [(80, 24), (200, 50), (120, 40)])
@pytest.mark.parametrize("view", range(1, len(VIEWS) + 2))
def test_every_view_fits_the_terminal(width: int, height: int, view: int) -> None:
    gpus = [
        GpuInfo(index=i, name="GPU", vram_used_mb=1000, vram_total_mb=2000, util_pct=50) for i in range(2)
    ]
    state = make_state(gpus=gpus)
    state.config.update({f"EXTRA_SETTING_{i}": i for i in range(40)})
    frame = make_frame(
        state=state, view=min(view, len(VIEWS)), help=view > len(VIEWS), events=make_events(5000)
    )
    console = Console(width=width, height=height, record=True, color_system=None, file=io.StringIO())
    console.print(render(frame, width, height), end="")
    lines = console.export_text().splitlines()
    assert len(lines) == height
    assert all(len(line) <= width for line in lines)
    assert lines[0].startswith("AutoTrain") and "q quit" in lines[-1]


def test_config_overflow_is_announced_on_a_small_screen() -> None:
    state = make_state()
    state.config.update({f"EXTRA_SETTING_{i}": i for i in range(60)})
    text = screen(make_frame(state=state, view=5), width=80, height=24)
    assert "more · ↑↓ j k PgUp PgDn g G scroll" in text and "enlarge the terminal" not in text


def test_render_refuses_an_unknown_view() -> None:
    with pytest.raises(ValueError, match="view must be 1-6"):
        render(make_frame(view=7), 100)


def test_formatting() -> None:
    assert fmt_cost(None) == "unknown" and fmt_cost(0) == "$0.0000" and fmt_cost(12.5) == "$12.50"
    assert fmt_pct(1, 0) == "–" and fmt_pct(1, 3) == "33.3%"
    assert fmt_duration(None) == "–" and fmt_duration(3725) == "1h 02m 05s" and fmt_duration(9) == "9s"
    assert bar(0.5, 10).plain == "█████░░░░░" and bar(None, 4).plain == "····"
    assert sparkline([], 10) == "" and sparkline([1, 1, 1], 10) == "▅▅▅"
    assert sparkline([0, 1], 10) == "▁█" and len(sparkline(list(range(1000)), 40)) == 40


def test_the_header_warns_when_generated_code_runs_unconfined() -> None:
    gated = {"RUN_UNIT_TESTS": "1", "SANDBOX": "auto"}
    confined = screen(make_frame(state=make_state(config=gated)), width=140)
    unconfined = screen(make_frame(state=make_state(config={**gated, "SANDBOX": "none"})), width=140)
    assert "SANDBOX none" not in confined
    assert "SANDBOX none" in unconfined


def test_teacher_view_shows_each_endpoint_of_a_pool_and_which_is_out() -> None:
    state = make_state()
    state.teacher_endpoints = {
        "http://gpu1:8000/v1": EndpointUsage(
            usage={"requests_sent": 80, "input_tokens": 4000, "output_tokens": 1000, "estimated_cost_usd": 0.01},
            latency_p50_s=0.42, latency_p95_s=1.25, in_flight=3,
        ),
        "http://gpu2:8000/v1": EndpointUsage(usage={"requests_sent": 43}, errors=7, out_for_s=8.0),
    }  # fmt: skip
    lines = screen(make_frame(state=state, view=2), width=140).splitlines()
    gpu1 = next(line for line in lines if "http://gpu1:8000/v1" in line)
    gpu2 = next(line for line in lines if "http://gpu2:8000/v1" in line)
    assert gpu1.split()[2:10] == ["80", "5,000", "$0.0100", "0", "0.42s", "1.25s", "3", "in"], gpu1
    assert "43" in gpu2 and " 7 " in gpu2 and "out 8s" in gpu2
