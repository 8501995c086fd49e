"""The /metrics collector: naming-guide names, base units, outcomes as labels, info metrics, promtool-clean."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from prometheus_client.parser import text_string_to_metric_families
from ui_builders import busy_state, view

from heidi_engine.bus.paired import PairedScores, mcnemar_exact
from heidi_engine.bus.state import EndpointUsage, EvalSample, EvalScores, GpuInfo, RunState
from heidi_engine.ui.http.metrics import exposition, stage_durations
from heidi_engine.ui.status_view import Health
from heidi_engine.ui.viewer import View

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _scrape(snapshot: View, health: Health) -> tuple[bytes, Samples]:
    text = exposition(lambda: (snapshot, health))
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text.decode())
        for s in family.samples
    }
    return text, samples


def _state() -> RunState:
    state = busy_state()
    state.gpus[0] = GpuInfo(index=0, name="H100", vram_used_mb=2048, vram_total_mb=81920, util_pct=45.0,
                            temperature_c=61.0, power_w=312.5)  # fmt: skip
    state.counters.update(teacher_failed=3, rejected_dedup=2, test_pass=4, test_fail=1, eval_pass=3, eval_total=5)
    state.usage.update(input_tokens=100, output_tokens=40)
    pair = PairedScores(n=25, base_passed=3, adapter_passed=9, gained=6, lost=0, p=mcnemar_exact(6, 0))
    scores = EvalScores(val_loss=0.9, n_val=25, val_pass_at_1=0.12, val_passed=3, val_ci=(0.04, 0.3))
    adapter = scores.model_copy(update={"val_pass_at_1": 0.36, "val_passed": 9, "val_paired": pair})
    state.evals = [EvalSample(round=1, base=scores, adapter=adapter, base_round=1, best_round=1)]
    state.config.update(BASE_MODEL="smollm2-135m-instruct", TEACHER_MODEL="gpt-4o-mini", MAX_COST_USD=2.0)
    state.recent_events = [
        {"stage": "generate", "round": 1, "event_type": "stage_start", "ts": "2024-02-15T12:00:00Z"},
        {"stage": "generate", "round": 1, "event_type": "progress", "ts": "2024-02-15T12:00:30Z"},
        {"stage": "generate", "round": 1, "event_type": "stage_end", "ts": "2024-02-15T12:01:30.5Z"},
        {"stage": "train", "round": 1, "event_type": "stage_start", "ts": "2024-02-15T12:01:31Z"},
    ]
    return state


def test_names_units_and_labels_follow_the_naming_guide() -> None:
    _text, samples = _scrape(view(_state()), Health("ok"))
    gpu = (("gpu", "0"), ("name", "H100"))
    assert samples[("autotrain_up", ())] == 1
    assert samples[("autotrain_teacher_samples_total", (("outcome", "generated"),))] == 12
    assert samples[("autotrain_teacher_samples_total", (("outcome", "failed"),))] == 3
    assert samples[("autotrain_samples_rejected_total", (("reason", "dedup"),))] == 2
    assert samples[("autotrain_unit_tests_total", (("result", "fail"),))] == 1
    assert samples[("autotrain_eval_problems_total", (("result", "fail"),))] == 2
    assert samples[("autotrain_teacher_tokens_total", (("direction", "output"),))] == 40
    assert samples[("autotrain_teacher_cost_usd_total", ())] == 0.125
    assert samples[("autotrain_budget_usd", ())] == 2.0
    assert samples[("autotrain_gpu_memory_used_bytes", gpu)] == 2048 * 2**20
    assert samples[("autotrain_gpu_utilization_ratio", gpu)] == 0.45
    assert samples[("autotrain_gpu_temperature_celsius", gpu)] == 61.0
    assert samples[("autotrain_gpu_power_watts", gpu)] == 312.5
    assert ("autotrain_gpu_utilization_ratio", (("gpu", "1"), ("name", "A100"))) not in samples  # unknown, not 0
    assert samples[("autotrain_host_cpu_utilization_ratio", ())] == 0.125
    assert samples[("autotrain_stage_duration_seconds", (("stage", "generate"),))] == 90.5
    run_info = (("base_model", "smollm2-135m-instruct"), ("run_id", "run_20240215_123456_abc12345"),
                ("teacher_model", "gpt-4o-mini"))  # fmt: skip
    assert samples[("autotrain_run_info", run_info)] == 1
    assert any(name == "autotrain_build_info" for name, _labels in samples)
    assert not [name for name, _labels in samples if name.endswith("_total_total") or "_mb" in name]


def test_unknown_cost_and_no_run_have_no_sample() -> None:
    state = RunState()
    state.usage["estimated_cost_usd"] = None
    _text, samples = _scrape(view(state, connected=False, silence_s=None), Health("down", "gone"))
    assert samples[("autotrain_up", ())] == 0
    assert ("autotrain_teacher_cost_usd_total", ()) not in samples
    assert not [name for name, _labels in samples if name.startswith(("autotrain_gpu_", "autotrain_host_"))]
    assert not [name for name, _labels in samples if name == "autotrain_run_info"]
    assert stage_durations(state) == {}


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian package prometheus) not installed")
def test_promtool_finds_nothing_to_complain_about() -> None:
    text, _samples = _scrape(view(_state()), Health("ok"))
    check = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, timeout=60, check=False)
    assert (check.returncode, check.stdout, check.stderr) == (0, b"", b""), (check, text.decode())


def test_a_teacher_pool_is_labelled_by_endpoint() -> None:
    state = _state()
    state.teacher_endpoints = {
        "http://gpu1:8000/v1": EndpointUsage(
            usage={"requests_sent": 5, "input_tokens": 50, "output_tokens": 20, "estimated_cost_usd": 0.25},
            errors=1, latency_p50_s=0.5, latency_p95_s=2.0, in_flight=2,
        ),
        "http://gpu2:8000/v1": EndpointUsage(usage={"requests_sent": 1, "estimated_cost_usd": None}, out_for_s=3.0),
    }  # fmt: skip
    _text, samples = _scrape(view(state), Health("ok"))
    gpu1, gpu2 = (("endpoint", "http://gpu1:8000/v1"),), (("endpoint", "http://gpu2:8000/v1"),)
    assert samples[("autotrain_teacher_endpoint_requests_total", gpu1)] == 5
    assert samples[("autotrain_teacher_endpoint_tokens_total", (("direction", "output"), *gpu1))] == 20
    assert samples[("autotrain_teacher_endpoint_cost_usd_total", gpu1)] == 0.25
    assert ("autotrain_teacher_endpoint_cost_usd_total", gpu2) not in samples  # unknown, not 0
    assert samples[("autotrain_teacher_endpoint_errors_total", gpu1)] == 1
    assert samples[("autotrain_teacher_endpoint_latency_seconds", (*gpu1, ("quantile", "0.95")))] == 2.0
    assert samples[("autotrain_teacher_endpoint_in_flight", gpu1)] == 2
    assert (samples[("autotrain_teacher_endpoint_up", gpu1)], samples[("autotrain_teacher_endpoint_up", gpu2)]) == (1, 0)
