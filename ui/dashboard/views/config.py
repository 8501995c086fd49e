"""The Configuration view: the run's effective configuration, secrets redacted by name and by value."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping

from rich.text import Text

from heidi_engine.bus.redaction import default_redactor
from heidi_engine.ui.dashboard.frame import Frame
from heidi_engine.ui.text import box, cell, safe

_CONFIG_COLUMN_W = 40


def config_items(config: Mapping[str, object]) -> list[tuple[str, str]]:
    """``(key, value)`` pairs for display, redacted by key name and by content."""
    redacted = default_redactor().redact_obj(dict(config))
    assert isinstance(redacted, dict)
    items = []
    for key, value in redacted.items():
        if value is None:
            shown = "(empty)"
        elif isinstance(value, str):
            shown = value
        else:
            shown = json.dumps(value, default=str)
        items.append((safe(key, 60), safe(shown, 200)))
    return items


def render_config(frame: Frame, width: int, height: int | None) -> list[Text]:
    """The run's effective configuration, in as many key/value column pairs as the screen needs."""
    items = config_items(frame.state.config or {})
    note = Text(
        "Secrets come from environment variables and are never shown: they appear as [REDACTED].", style="dim"
    )
    title = Text("Configuration", style="bold")
    if not items:
        return box(
            title, [Text("no configuration yet: no run has started", style="dim"), note], width, height
        )
    room = len(items) if height is None else max(1, height - 3)
    pairs = max(1, min(math.ceil(len(items) / room), (width - 4) // _CONFIG_COLUMN_W))
    if pairs * room < len(items):
        room = max(1, room - 1)  # a row for "… N more"
    rows = math.ceil(len(items) / pairs) if pairs * room >= len(items) else room
    column_w = (width - 4) // pairs
    key_w = min(max(len(k) for k, _ in items) + 1, column_w // 2)
    lines = []
    for row in range(rows):
        line = Text()
        for column in range(pairs):
            index = column * rows + row
            if index < len(items):
                key, value = items[index]
                line.append_text(cell(key, key_w, style="cyan"))
                line.append_text(cell(value, column_w - key_w - 1))
                line.append(" ")
        lines.append(line)
    hidden = len(items) - rows * pairs
    if hidden > 0:
        lines.append(Text(f"… {hidden} more: enlarge the terminal", style="yellow"))
    lines.append(note)
    return box(title, lines, width, height)
