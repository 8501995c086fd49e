"""The Teacher view: the teacher's requests, tokens, cost and rates, and each endpoint's line."""

from __future__ import annotations

from rich.text import Text

from heidi_engine.bus.event import COST_FIELD
from heidi_engine.bus.state import RunState
from heidi_engine.ui.dashboard.frame import Frame
from heidi_engine.ui.dashboard.views.events import log_of
from heidi_engine.ui.text import (
    DASH,
    box,
    cell,
    fmt_cost,
    fmt_int,
    fmt_pct,
    fmt_rate,
    label_value,
    outage_text,
    safe,
)


def usage_count(state: RunState, name: str) -> int:
    """A usage figure of the state as a whole number (0 when unknown)."""
    return int(state.usage.get(name) or 0)


_ENDPOINT_COLUMNS = (("requests", 9), ("tokens", 11), ("cost", 10), ("errors", 7), ("p50", 8), ("p95", 8),
                     ("active", 7), ("state", 9))  # fmt: skip
_ENDPOINT_NAME_W = 16, 48  # the name column takes what the others leave, within these bounds


def endpoint_lines(state: RunState, width: int) -> list[Text]:
    """One row per teacher endpoint of a pool: its share of the usage, failed attempts, reply latency
    percentiles, requests in flight ("active"), and whether it is taken out (with the seconds left)."""
    left = width - 4 - sum(w for _, w in _ENDPOINT_COLUMNS)  # 4: the box's borders and padding
    name_w = max(_ENDPOINT_NAME_W[0], min(_ENDPOINT_NAME_W[1], left))
    head = cell("endpoint", name_w, style="dim underline")
    for name, width in _ENDPOINT_COLUMNS:
        head.append_text(cell(name, width, right=True, style="dim underline"))
    lines = [head]
    for name, entry in sorted(state.teacher_endpoints.items()):
        usage = entry.usage
        tokens = int(usage.get("input_tokens") or 0) + int(usage.get("output_tokens") or 0)
        out = f"out {entry.out_for_s:.0f}s" if entry.out_for_s > 0 else "in"
        values = (
            fmt_int(int(usage.get("requests_sent") or 0)), fmt_int(tokens), fmt_cost(usage.get(COST_FIELD)),
            fmt_int(entry.errors), _seconds(entry.latency_p50_s), _seconds(entry.latency_p95_s),
            fmt_int(entry.in_flight), out,
        )  # fmt: skip
        line = cell(safe(name, 200), name_w, style="dim")
        for value, (column, width) in zip(values, _ENDPOINT_COLUMNS, strict=True):
            style = "yellow" if column == "state" and entry.out_for_s > 0 else "bold"
            line.append_text(cell(value, width, right=True, style=style))
        lines.append(line)
    return lines


def _seconds(value: float | None) -> str:
    return DASH if value is None else f"{value:.2f}s"


def render_teacher(frame: Frame, width: int, height: int | None) -> list[Text]:
    """Requests, tokens, rate limits, retries and cost, with live rates and the configured teacher."""
    state, rates = frame.state, frame.rates
    requests = usage_count(state, "requests_sent")
    tokens_in, tokens_out = usage_count(state, "input_tokens"), usage_count(state, "output_tokens")
    limits, retries = usage_count(state, "rate_limits_hit"), usage_count(state, "retries")
    gen, failed = state.counters.get("teacher_generated", 0), state.counters.get("teacher_failed", 0)
    cost = state.usage.get(COST_FIELD)
    config = state.config or {}
    budget = config.get("MAX_COST_USD")
    if cost is None:
        cost_note = "no price known for this model, or a reply carried no usage"
    elif isinstance(budget, (int, float)) and budget > 0:
        cost_note = f"budget ${budget:,.2f} · {fmt_pct(cost, budget)} spent"
    else:
        cost_note = "no budget set"
    # Replies came in the window yet no token was counted: they reported no usage, so the rate is unknown.
    replied = bool(rates.generated_s)
    tokens_in_s = None if replied and not rates.input_tokens_s else rates.input_tokens_s
    tokens_out_s = None if replied and not rates.output_tokens_s else rates.output_tokens_s
    total_rate = None if tokens_in_s is None or tokens_out_s is None else tokens_in_s + tokens_out_s
    per_request = f"{(tokens_in + tokens_out) / requests:,.0f} per request" if requests else ""
    rows: list[tuple[str, str, str, str]] = [
        ("requests sent", fmt_int(requests), fmt_rate(rates.requests_s, " req/s"), ""),
        ("input tokens", fmt_int(tokens_in), fmt_rate(tokens_in_s, " tok/s"), ""),
        ("output tokens", fmt_int(tokens_out), fmt_rate(tokens_out_s, " tok/s"), ""),
        ("total tokens", fmt_int(tokens_in + tokens_out), fmt_rate(total_rate, " tok/s"), per_request),
        ("rate limits hit", fmt_int(limits), "", fmt_pct(limits, requests) + " of requests"),
        ("retries", fmt_int(retries), "", fmt_pct(retries, requests) + " of requests"),
        ("estimated cost", fmt_cost(cost), "", cost_note),
        ("samples generated", fmt_int(gen), fmt_rate(rates.generated_s, " samples/s"), ""),
        ("teacher failures", fmt_int(failed), "", fmt_pct(failed, gen + failed) + " of attempts"),
    ]
    lines = []
    outage = state.teacher_outage
    if outage is not None:  # parked: the counts below stand still until a probe gets through; say so first
        lines.append(label_value("teacher", outage_text(outage, frame.now, reason=False), value_style="bold red"))
        lines += [label_value("last error", safe(outage.reason or DASH, 300), value_style="red"), Text()]
    head = cell("metric", 18, style="dim underline")
    head.append_text(cell("total", 14, right=True, style="dim underline"))
    head.append_text(cell("live", 18, right=True, style="dim underline"))
    lines.append(head)
    for name, total, live, note in rows:
        line = cell(name, 18, style="dim")
        line.append_text(cell(total, 14, right=True, style="bold"))
        line.append_text(cell(live, 18, right=True, style="cyan"))
        line.append("   " + note, style="dim")
        lines.append(line)
    lines.append(Text())
    if state.teacher_endpoints:
        lines.extend(endpoint_lines(state, width))
        lines.append(Text())
    # The generate stage's latest word: progress with streaming speed, or "teacher unreachable since ...".
    report = next(
        (
            e
            for e in reversed(log_of(frame))
            if e.get("stage") == "generate" and e.get("event_type") == "progress"
        ),
        None,
    )
    if report is not None:
        style = "dim" if state.teacher_outage else "yellow" if report.get("level") == "warn" else "bold"
        lines.append(label_value("latest report", safe(report.get("message", ""), 300), value_style=style))
        lines.append(Text())
    local = str(config.get("TEACHER_MODEL") or "").startswith("local:")
    for key in ("TEACHER_MODEL", "TEACHER_BASE_URL", "TEACHER_CONCURRENCY", "TEACHER_MAX_RETRIES"):
        if key == "TEACHER_BASE_URL" and local:
            # A local: teacher runs in the generate stage's own process: no endpoint is ever called.
            model = str(config["TEACHER_MODEL"]).removeprefix("local:")
            lines.append(label_value(f"{'local model':<20}", f"{safe(model, 100)} (in-process; no API endpoint)"))
        elif key in config:
            lines.append(label_value(f"{key:<20}", safe(config[key], 120)))
    return box(Text("Teacher", style="bold"), lines, width, height)
