"""Formatting for the dashboard's panels: numbers, durations, costs, bars and sparklines as Rich ``Text``.

Every string that comes from the run (messages, names, config values, errors) reaches the screen through
:func:`safe`, which redacts secrets and strips terminal escapes at this output edge, and is then placed in
a ``Text`` (never parsed as Rich markup), so a message cannot restyle or move the screen.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone

from rich.text import Text

from heidi_engine.bus.outage import TeacherOutage
from heidi_engine.bus.redaction import clean

UNKNOWN = "unknown"
DASH = "–"
_SPARK = "▁▂▃▄▅▆▇█"
_EIGHTHS = " ▏▎▍▌▋▊▉"

LEVEL_STYLES: dict[str, str] = {"info": "cyan", "warn": "yellow", "error": "bold red", "success": "green"}
STATUS_STYLES: dict[str, str] = {
    "idle": "dim",
    "starting": "cyan",
    "running": "bold green",
    "paused": "bold yellow",
    "stopping": "yellow",
    "stopped": "magenta",
    "completed": "bold bright_green",
    "failed": "bold red",
    "interrupted": "bold red",
}


def safe(value: object, max_len: int = 200) -> str:
    """``value`` as text fit for the screen: secrets redacted, escapes stripped, cut to ``max_len``."""
    return clean(str(value), max_len)


def fmt_int(value: float | int | None) -> str:
    """``1,234``; a dash for ``None``."""
    return DASH if value is None else f"{int(value):,}"


def fmt_rate(per_s: float | None, unit: str = "/s") -> str:
    """A per-second rate with a precision that suits its size; a dash when there is no measure yet."""
    if per_s is None:
        return DASH
    if per_s >= 100:
        return f"{per_s:,.0f}{unit}"
    return f"{per_s:.1f}{unit}"


def fmt_pct(part: float, whole: float) -> str:
    """``part / whole`` as a percentage; a dash when ``whole`` is zero (no rate of nothing)."""
    if whole <= 0:
        return DASH
    return f"{100.0 * part / whole:.1f}%"


def fmt_cost(usd: float | int | None) -> str:
    """The estimated cost: ``unknown`` for ``None`` (a model without a price), which is not ``$0``."""
    if usd is None:
        return UNKNOWN
    return f"${usd:,.4f}" if usd < 1 else f"${usd:,.2f}"


def fmt_float(value: float | None, digits: int = 4) -> str:
    """A gauge with ``digits`` significant digits; a dash for ``None``."""
    return DASH if value is None else f"{value:.{digits}g}"


def fmt_lr(value: float | None) -> str:
    """A learning rate in scientific notation (``2.00e-04``)."""
    return DASH if value is None else f"{value:.2e}"


def fmt_duration(seconds: float | None) -> str:
    """``1h 02m 03s`` / ``4m 05s`` / ``12s``; a dash for ``None`` or a negative value."""
    if seconds is None or seconds < 0:
        return DASH
    total = int(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m {secs:02d}s"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


def fmt_mb(mb: float | None) -> str:
    """Memory in MiB, shown in GiB above 1 GiB."""
    if mb is None:
        return DASH
    return f"{mb / 1024:.1f} GiB" if mb >= 1024 else f"{mb:.0f} MiB"


def parse_ts(value: str | None) -> datetime | None:
    """An event timestamp (ISO 8601 with ``Z``) as an aware datetime; ``None`` when absent or malformed."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def clock_of(ts: object) -> str:
    """``HH:MM:SS.mmm`` of an event timestamp, for the log's first column."""
    text = safe(ts, 40)
    return text[11:23] if len(text) >= 23 else text[:12]


def outage_since(outage: TeacherOutage, now: datetime) -> str:
    """``12:35:00 UTC (5m 00s)``: when the teacher became unreachable, and for how long by ``now``."""
    since = parse_ts(outage.since)
    lasted = "" if since is None else f" ({fmt_duration(max(0.0, (now - since).total_seconds()))})"
    return f"{safe(outage.since, 40)[11:19]} UTC{lasted}"


def outage_text(outage: TeacherOutage, now: datetime | None = None, *, reason: bool = True) -> str:
    """A parked teacher in a line: since when (for how long and the next probe in how long, given ``now``;
    else their UTC times), the probe interval, the samples held back and (with ``reason``) the last error."""
    next_at = parse_ts(outage.next_probe_at)
    probe = f"a probe every {outage.retry_every_s:g} s"
    if now is None:
        parts = [f"unreachable since {safe(outage.since, 40)}"]
        probe += f", next at {safe(outage.next_probe_at, 40)}" if outage.next_probe_at else ""
    else:
        parts = [f"unreachable since {outage_since(outage, now)}"]
        left = None if next_at is None else (next_at - now).total_seconds()
        probe += "" if left is None else f", next in {fmt_duration(left)}" if left >= 1 else ", next now"
    parts.append(probe)
    if outage.jobs_waiting:
        parts.append(f"{outage.jobs_waiting:,} sample(s) waiting")
    if reason and outage.reason:
        parts.append(f"last error: {safe(outage.reason)}")
    return " · ".join(parts)


def bar(fraction: float | None, width: int, *, style: str | None = None) -> Text:
    """A horizontal bar ``width`` cells wide, in eighths; coloured by level unless ``style`` is given."""
    width = max(1, width)
    if fraction is None:
        return Text("·" * width, style="dim")
    fraction = min(1.0, max(0.0, fraction))
    eighths = round(fraction * width * 8)
    full, part = divmod(eighths, 8)
    filled = "█" * full + (_EIGHTHS[part] if part and full < width else "")
    if style is None:
        style = "red" if fraction >= 0.9 else "yellow" if fraction >= 0.7 else "green"
    text = Text(filled, style=style)
    text.append("░" * (width - len(filled)), style="grey37")
    return text


def sparkline(values: Sequence[float], width: int) -> str:
    """The shape of ``values`` in block characters, at most ``width`` wide (buckets averaged when longer)."""
    if not values or width < 1:
        return ""
    if len(values) > width:
        buckets: list[float] = []
        for i in range(width):
            lo = i * len(values) // width
            hi = max(lo + 1, (i + 1) * len(values) // width)
            chunk = values[lo:hi]
            buckets.append(sum(chunk) / len(chunk))
        values = buckets
    low, high = min(values), max(values)
    span = high - low
    if span <= 0:
        return _SPARK[len(_SPARK) // 2] * len(values)
    top = len(_SPARK) - 1
    return "".join(_SPARK[round((v - low) / span * top)] for v in values)


def label_value(label: str, value: str | Text, *, value_style: str = "bold") -> Text:
    """``label value`` with the label dimmed."""
    text = Text(f"{label} ", style="dim")
    if isinstance(value, Text):
        text.append_text(value)
    else:
        text.append(value, style=value_style)
    return text


def fit(text: Text | str, width: int) -> Text:
    """A copy of ``text`` exactly ``width`` cells wide: cut with an ellipsis, or padded with spaces."""
    out = Text(text) if isinstance(text, str) else text.copy()
    out.truncate(max(0, width), overflow="ellipsis", pad=True)
    return out


def cell(value: str, width: int, *, right: bool = False, style: str = "") -> Text:
    """One table cell: ``value`` cut or padded to ``width`` cells, right-aligned when asked."""
    if len(value) > width:
        value = value[: max(0, width - 1)] + "…" if width > 0 else ""
    return Text(value.rjust(width) if right else value.ljust(width), style=style)


def box(title: Text | str, lines: Sequence[Text], width: int, height: int | None = None) -> list[Text]:
    """``lines`` framed by a rounded border with ``title``, ``width`` cells wide.

    With ``height`` the box is exactly that many rows: lines past the space are dropped, short content
    is padded. Drawn from plain ``Text`` rows, since a nested Rich ``Panel`` costs several times as much
    to render on every refresh.
    """
    inner = max(1, width - 4)
    label = fit(Text(title) if isinstance(title, str) else title, min(inner - 1, _cell_len(title)))
    top = Text("╭─ ", style=_BORDER)
    top.append_text(label)
    top.append(" " + "─" * max(0, width - 5 - label.cell_len) + "╮", style=_BORDER)
    rows = list(lines) if height is None else list(lines[: max(0, height - 2)])
    if height is not None:
        rows += [Text()] * max(0, height - 2 - len(rows))
    framed = [top]
    for line in rows:
        row = Text("│ ", style=_BORDER)
        row.append_text(fit(line, inner))
        row.append(" │", style=_BORDER)
        framed.append(row)
    framed.append(Text("╰" + "─" * max(0, width - 2) + "╯", style=_BORDER))
    return framed


def beside(left: Sequence[Text], right: Sequence[Text], left_width: int, gap: int = 1) -> list[Text]:
    """Two columns of rows side by side; the shorter column is padded with blank rows."""
    rows = []
    for i in range(max(len(left), len(right))):
        row = fit(left[i], left_width) if i < len(left) else Text(" " * left_width)
        row.append(" " * gap)
        if i < len(right):
            row.append_text(right[i])
        rows.append(row)
    return rows


_BORDER = "blue"


def _cell_len(title: Text | str) -> int:
    return title.cell_len if isinstance(title, Text) else Text(title).cell_len
