"""The Overview and Teacher views: pipeline counters with their rates, teacher usage and cost.

Ratios (validated / generated, tests passed / tested...) are computed from the counts here, never
summed; per-second rates come measured in the frame, since a single snapshot has no notion of time.
"""

from __future__ import annotations

from heidi_engine.bus.event import COST_FIELD
from heidi_engine.bus.state import RunState
from heidi_engine.ui.panels import Frame
from heidi_engine.ui.panels_events import event_line, log_of
from heidi_engine.ui.panels_text import (
    DASH,
    bar,
    fmt_cost,
    fmt_duration,
    fmt_float,
    fmt_int,
    fmt_lr,
    fmt_pct,
    fmt_rate,
    label_value,
    safe,
)
from heidi_engine.ui.panels_trainer import eta_s, system_lines
from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

_PIPELINE_ROWS = 11
_SUMMARY_ROWS = 11
_WIDE = 100


def _usage(state: RunState, name: str) -> int:
    return int(state.usage.get(name) or 0)


def pipeline_table(frame: Frame, wide: bool) -> Table:
    """Every counter, with its rate against the count it is a share of."""
    c = frame.state.counters
    gen, failed = c.get("teacher_generated", 0), c.get("teacher_failed", 0)
    tested = c.get("test_pass", 0) + c.get("test_fail", 0)
    evals = c.get("eval_total", 0)
    rows: list[tuple[str, str, str]] = [
        ("teacher_generated", fmt_rate(frame.rates.generated_s), "live"),
        ("teacher_failed", fmt_pct(failed, gen + failed), "of requests"),
        ("validated_ok", fmt_pct(c.get("validated_ok", 0), gen), "of generated"),
        ("rejected_schema", fmt_pct(c.get("rejected_schema", 0), gen), "of generated"),
        ("rejected_secret", fmt_pct(c.get("rejected_secret", 0), gen), "of generated"),
        ("rejected_dedup", fmt_pct(c.get("rejected_dedup", 0), gen), "of generated"),
        ("test_pass", fmt_pct(c.get("test_pass", 0), tested), "of tested"),
        ("test_fail", fmt_pct(c.get("test_fail", 0), tested), "of tested"),
        ("train_step", fmt_rate(frame.rates.train_steps_s), "live"),
        ("eval_pass", fmt_pct(c.get("eval_pass", 0), evals), "of eval_total"),
        ("eval_total", "", ""),
    ]
    table = Table.grid(padding=(0, 1))
    table.add_column(no_wrap=True, overflow="ellipsis")
    table.add_column(justify="right", no_wrap=True, style="bold")
    table.add_column(justify="right", no_wrap=True, style="cyan")
    if wide:
        table.add_column(no_wrap=True, style="dim")
    for name, rate, basis in rows:
        cells: list[Text | str] = [Text(name, style="dim"), fmt_int(c.get(name, 0)), rate]
        table.add_row(*cells, *([basis] if wide else []))
    return table


def summary_lines(frame: Frame, width: int) -> list[Text]:
    """Teacher usage, trainer status, system, agents and the last error, one line each."""
    state = frame.state
    lines = [Text("Teacher", style="bold underline")]
    requests = label_value("requests", fmt_int(_usage(state, "requests_sent")))
    requests.append(f" · {fmt_rate(frame.rates.requests_s)}", style="cyan")
    lines.append(requests)
    tokens = label_value("tokens in", fmt_int(_usage(state, "input_tokens")))
    tokens.append_text(label_value(" · out", fmt_int(_usage(state, "output_tokens"))))
    lines.append(tokens)
    cost = label_value("cost", fmt_cost(state.usage.get(COST_FIELD)))
    cost.append_text(label_value(" · rate limits", fmt_int(_usage(state, "rate_limits_hit"))))
    cost.append_text(label_value(" · retries", fmt_int(_usage(state, "retries"))))
    lines.append(cost)

    trainer = state.trainer
    lines.append(Text("Trainer", style="bold underline"))
    step = label_value("step", f"{trainer.step:,}/{trainer.total:,}" if trainer.total else DASH)
    if trainer.total:
        step.append(" ")
        step.append_text(bar(trainer.step / trainer.total, max(5, min(20, width // 4)), style="cyan"))
        step.append(f" ETA {fmt_duration(eta_s(frame))}", style="dim")
    lines.append(step)
    loss = label_value("loss", fmt_float(trainer.loss))
    loss.append_text(label_value(" · lr", fmt_lr(trainer.learning_rate)))
    lines.append(loss)

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


def render_overview(frame: Frame, width: int, height: int | None) -> RenderableType:
    """Counters, teacher, trainer, system and the most recent events that fit."""
    wide = width >= _WIDE
    top = Table.grid(expand=True, padding=(0, 1))
    top.add_column(ratio=1)
    top.add_column(ratio=1)
    lines = summary_lines(frame, width // 2)
    for line in lines:
        line.no_wrap, line.overflow = True, "ellipsis"
    top.add_row(
        Panel(pipeline_table(frame, wide), title="Pipeline", title_align="left", border_style="blue"),
        Panel(Group(*lines), title="Status", title_align="left", border_style="blue"),
    )
    top_rows = max(_PIPELINE_ROWS, _SUMMARY_ROWS, len(lines)) + 2
    recent = 12 if height is None else height - top_rows - 2
    if recent < 1:
        return top
    log = log_of(frame)[-recent:]
    body: RenderableType = (
        Group(*(event_line(e, width - 4) for e in log)) if log else Text("no events yet", style="dim")
    )
    return Group(top, Panel(body, title="Recent events", title_align="left", border_style="blue"))


def render_teacher(frame: Frame, width: int, height: int | None) -> RenderableType:
    """Requests, tokens, rate limits, retries and cost, with live rates and the configured teacher."""
    state, rates = frame.state, frame.rates
    requests = _usage(state, "requests_sent")
    tokens_in, tokens_out = _usage(state, "input_tokens"), _usage(state, "output_tokens")
    gen, failed = state.counters.get("teacher_generated", 0), state.counters.get("teacher_failed", 0)
    cost = state.usage.get(COST_FIELD)
    config = state.config or {}
    budget = config.get("MAX_COST_USD")
    if isinstance(budget, (int, float)) and budget > 0:
        spent = fmt_pct(cost, budget) + " of budget" if cost is not None else "budget unknown"
        budget_note = f"budget ${budget:,.2f} · {spent}"
    else:
        budget_note = "no budget set"
    total_rate = (
        None
        if rates.input_tokens_s is None or rates.output_tokens_s is None
        else rates.input_tokens_s + rates.output_tokens_s
    )
    rows: list[tuple[str, str, str, str]] = [
        ("requests sent", fmt_int(requests), fmt_rate(rates.requests_s, " req/s"), ""),
        ("input tokens", fmt_int(tokens_in), fmt_rate(rates.input_tokens_s, " tok/s"), ""),
        ("output tokens", fmt_int(tokens_out), fmt_rate(rates.output_tokens_s, " tok/s"), ""),
        (
            "total tokens",
            fmt_int(tokens_in + tokens_out),
            fmt_rate(total_rate, " tok/s"),
            f"{(tokens_in + tokens_out) / requests:,.0f} per request" if requests else "",
        ),
        (
            "rate limits hit",
            fmt_int(_usage(state, "rate_limits_hit")),
            "",
            fmt_pct(_usage(state, "rate_limits_hit"), requests) + " of requests",
        ),
        (
            "retries",
            fmt_int(_usage(state, "retries")),
            "",
            fmt_pct(_usage(state, "retries"), requests) + " of requests",
        ),
        (
            "estimated cost",
            fmt_cost(cost),
            "",
            budget_note if cost is not None else "no price known for this model",
        ),
        ("samples generated", fmt_int(gen), fmt_rate(rates.generated_s, " samples/s"), ""),
        ("teacher failures", fmt_int(failed), "", fmt_pct(failed, gen + failed) + " of attempts"),
    ]
    table = Table(expand=True, show_edge=False, box=None, padding=(0, 2))
    table.add_column("metric", style="dim", no_wrap=True)
    table.add_column("total", justify="right", style="bold", no_wrap=True)
    table.add_column("live", justify="right", style="cyan", no_wrap=True)
    table.add_column("", style="dim", no_wrap=True, overflow="ellipsis", ratio=1)
    for row in rows:
        table.add_row(*row)
    about = Text()
    for key in ("TEACHER_MODEL", "TEACHER_BASE_URL", "TEACHER_CONCURRENCY", "TEACHER_MAX_RETRIES"):
        if key in config:
            about.append_text(label_value(key, safe(config[key], 80)))
            about.append("   ")
    parts: list[RenderableType] = [table]
    if about:
        about.no_wrap, about.overflow = True, "ellipsis"
        parts += [Text(""), about]
    return Panel(Group(*parts), title="Teacher", title_align="left", border_style="blue")
