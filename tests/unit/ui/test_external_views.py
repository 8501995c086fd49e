"""A training script reporting beside the run, as itself, in every view: the dashboard's Training view,
the menu's --status lines and /metrics; the run's own trainer figures stay the run's."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families
from ui_builders import busy_state, make_frame, screen, view

from heidi_engine.bus.state import RunState, TrainerGauges
from heidi_engine.ui.http.metrics import exposition
from heidi_engine.ui.status_view import assess, format_status


def beside() -> RunState:
    state = busy_state()
    state.external["external:sweep-3"] = TrainerGauges(round=1, step=40, total=60, loss=2.3125)
    return state


def test_the_training_view_shows_each_script_as_itself() -> None:
    state = beside()
    text = screen(make_frame(state=state, view=3), width=140)
    assert "external:sweep-3 round 1 · step 40/60 · loss 2.312" in text, text
    assert "external:" not in screen(make_frame(state=busy_state(), view=3), width=140)


def test_the_menus_status_names_the_script() -> None:
    answer = {"run_id": "run_20240215_123456_abc12345", "status": "running", "pid": 1, "uptime_s": 3.0,
              "external": {"external:sweep-3": {"round": 1, "step": 40, "total": 60, "loss": 2.3125}}}  # fmt: skip
    assert "external    external:sweep-3 · step 40/60 · loss 2.3125" in format_status(answer)


def test_metrics_carry_each_scripts_step_and_loss_by_source() -> None:
    state = beside()
    text = exposition(lambda: (view(state), assess(view(state), None))).decode()
    samples = {(s.name, s.labels.get("source")): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}  # fmt: skip
    assert samples[("autotrain_external_trainer_step", "external:sweep-3")] == 40
    assert samples[("autotrain_external_trainer_loss", "external:sweep-3")] == 2.3125
    assert samples[("autotrain_trainer_step", None)] == state.trainer.step
