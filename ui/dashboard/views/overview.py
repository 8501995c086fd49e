"""The Overview and Teacher views: pipeline counters with their rates, teacher usage and cost.

Ratios (validated / generated, tests passed / tested...) are computed from the counts here, never
summed; per-second rates come measured in the frame, since a single snapshot has no notion of time.
"""

from __future__ import annotations

from rich.text import Text

from heidi_engine.bus.event import COST_FIELD
from heidi_engine.ui.dashboard.frame import Frame
from heidi_engine.ui.dashboard.views.events import event_line, log_of
from heidi_engine.ui.dashboard.views.teacher import usage_count
from heidi_engine.ui.dashboard.views.trainer import current_trainer, eta_s, loading, system_lines
from heidi_engine.ui.eval_text import eval_line
from heidi_engine.ui.text import (
    DASH,
    bar,
    beside,
    box,
    cell,
    fmt_cost,
    fmt_duration,
    fmt_float,
    fmt_int,
    fmt_lr,
    fmt_pct,
    fmt_rate,
    label_value,
    outage_text,
    safe,
)

_NAME_W, _COUNT_W, _RATE_W = 17, 9, 7
_BASIS_W = 8
_MIN_NAME_W = 8


def pipeline_lines(frame: Frame, width: int) -> list[Text]:
    """Every counter with its rate against the count it is a share of (the basis named when it fits)."""
    c = frame.state.counters
    gen, failed = c.get("teacher_generated", 0), c.get("teacher_failed", 0)
    tested = c.get("test_pass", 0) + c.get("test_fail", 0)
    evals = c.get("eval_total", 0)
    rows: list[tuple[str, str, str]] = [
        ("teacher_generated", fmt_rate(frame.rates.generated_s), "live"),
        ("teacher_failed", fmt_pct(failed, gen + failed), "of tries"),
        ("validated_ok", fmt_pct(c.get("validated_ok", 0), gen), "of gen"),
        ("rejected_schema", fmt_pct(c.get("rejected_schema", 0), gen), "of gen"),
        ("rejected_secret", fmt_pct(c.get("rejected_secret", 0), gen), "of gen"),
        ("rejected_dedup", fmt_pct(c.get("rejected_dedup", 0), gen), "of gen"),
        ("test_pass", fmt_pct(c.get("test_pass", 0), tested), "of tests"),
        ("test_fail", fmt_pct(c.get("test_fail", 0), tested), "of tests"),
        ("train_step", fmt_rate(frame.rates.train_steps_s), "live"),
        ("eval_pass", fmt_pct(c.get("eval_pass", 0), evals), "of evals"),
        ("eval_total", "", ""),
    ]
    with_basis = width >= _NAME_W + _COUNT_W + _RATE_W + _BASIS_W + 2
    # On a narrow screen the labels give way first, then the rates; the counts always show whole.
    with_rate = width >= _MIN_NAME_W + _COUNT_W + _RATE_W + 1
    name_w = max(_MIN_NAME_W, min(_NAME_W, width - _COUNT_W - (_RATE_W + 1 if with_rate else 0)))
    lines = []
    for name, rate, basis in rows:
        line = cell(name, name_w, style="dim")
        line.append_text(cell(fmt_int(c.get(name, 0)), _COUNT_W, right=True, style="bold"))
        if with_rate:
            line.append_text(cell(rate, _RATE_W + 1, right=True, style="cyan"))
        if with_basis:
            line.append(" " + basis, style="dim")
        lines.append(line)
    return lines


def summary_lines(frame: Frame, width: int) -> list[Text]:
    """Teacher usage, trainer status, system, agents and the last error, one line each."""
    state = frame.state
    lines = [Text("Teacher", style="bold underline")]
    if state.teacher_outage is not None:
        lines.append(Text(outage_text(state.teacher_outage, frame.now, reason=False), style="bold red"))
    requests = label_value("requests", fmt_int(usage_count(state, "requests_sent")))
    requests.append(f" · {fmt_rate(frame.rates.requests_s)}", style="cyan")
    lines.append(requests)
    tokens = label_value("tokens in", fmt_int(usage_count(state, "input_tokens")))
    tokens.append_text(label_value(" · out", fmt_int(usage_count(state, "output_tokens"))))
    lines.append(tokens)
    cost = label_value("cost", fmt_cost(state.usage.get(COST_FIELD)))
    cost.append_text(label_value(" · rate limits", fmt_int(usage_count(state, "rate_limits_hit"))))
    cost.append_text(label_value(" · retries", fmt_int(usage_count(state, "retries"))))
    lines.append(cost)

    trainer = current_trainer(state)
    lines.append(Text("Trainer", style="bold underline"))
    step = label_value("step", f"{trainer.step:,}/{trainer.total:,}" if trainer.total else DASH)
    if loading(state):
        step.append(" loading the model…", style="yellow")
    elif trainer.total:
        step.append(" ")
        step.append_text(bar(trainer.step / trainer.total, max(5, min(20, width // 4)), style="cyan"))
        step.append(f" ETA {fmt_duration(eta_s(frame))}", style="dim")
    lines.append(step)
    loss = label_value("loss", fmt_float(trainer.loss))
    loss.append_text(label_value(" · lr", fmt_lr(trainer.learning_rate)))
    lines.append(loss)
    outcome = label_value("eval", eval_line(state.evals, state.best_round, compact=True), value_style="")
    lines.append(outcome)

    lines.append(Text("System", style="bold underline"))
    lines.extend(system_lines(state, compact=True, width=width))
    if state.agents:
        agents = Text("agents ", style="dim")
        for name, agent in (state.agents or {}).items():
            agents.append(f"{safe(name, 20)}:{agent.phase}", style="bold")
            if agent.restarts:
                agents.append(f" ({agent.restarts} restarts)", style="yellow")
            agents.append(" ")
        lines.append(agents)
    if state.error:
        lines.append(Text(f"error: {safe(state.error, 200)}", style="bold red"))
    return lines


def render_overview(frame: Frame, width: int, height: int | None) -> list[Text]:
    """Counters and status side by side, then the most recent events that fit."""
    left_w = (width - 1) // 2
    right_w = width - 1 - left_w
    summary = summary_lines(frame, right_w - 4)
    top_h = max(11, len(summary)) + 2
    left = box(Text("Pipeline", style="bold"), pipeline_lines(frame, left_w - 4), left_w, top_h)
    right = box(Text("Status", style="bold"), summary, right_w, top_h)
    lines = beside(left, right, left_w)
    recent = 12 if height is None else height - top_h - 2
    if recent < 1:
        return lines
    log = log_of(frame)[-recent:]
    rows = [event_line(e, width - 4) for e in log] or [Text("no events yet", style="dim")]
    return lines + box(
        Text("Recent events", style="bold"), rows, width, None if height is None else recent + 2
    )
