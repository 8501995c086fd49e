"""What the browser page may see of a :class:`~heidi_engine.ui.viewer.View`: pure functions, no I/O.

:data:`PAGE_FIELDS` is the page's allow-list (the views' data, a superset of ``/status``'s), each value
redacted again at this output edge and made JSON-safe (NaN and infinities are ``null``). A
:class:`Projector` keeps the last value it projected of each field, so a delta carries only the fields
that changed and projects only those (the loss history is projected when the trainer moved, not ten
times a second).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from heidi_engine.bus.config import AutoTrainConfig, file_values
from heidi_engine.bus.redaction import default_redactor
from heidi_engine.bus.state import RunState
from heidi_engine.ui.eval_text import eval_line
from heidi_engine.ui.status_view import Health, round_cost
from heidi_engine.ui.viewer import View, is_marker

__all__ = ["PAGE_FIELDS", "Projector", "config_rows", "json_safe", "link", "page_events", "redacted"]

# The state fields the page shows, in the order a snapshot lists them; ``outcome`` is derived.
PAGE_FIELDS: tuple[str, ...] = (
    "run_id", "status", "current_round", "total_rounds", "current_stage", "stop_requested", "pause_requested",
    "counters", "usage", "trainer", "gpus", "host", "gpu_message", "agents", "event_count", "last_event_ts",
    "started_at", "updated_at", "error", "best_adapter", "problem", "http_error", "evals", "best_round",
    "teacher_endpoints", "teacher_outage", "external", "config", "outcome",
)  # fmt: skip
# The fields of an event record the page shows (the record's own ``run_id`` and version are not needed).
EVENT_KEYS: tuple[str, ...] = (
    "ts", "round", "stage", "level", "event_type", "message", "counters_delta", "usage_delta", "artifact_paths",
    "error",
)  # fmt: skip
_AGENT_KEYS = ("stage", "phase", "restarts")  # not the pid and group: nothing a browser needs


def json_safe(value: Any) -> Any:
    """``value`` with every NaN or infinity made ``null`` and tuples made lists (what JSON can say)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(item) for item in value]
    return value


def redacted(value: Any) -> Any:
    """``value`` redacted (dict keys too, secret-named keys whole) and made JSON-safe."""
    return json_safe(default_redactor().redact_obj(value))


def config_rows(config: Mapping[str, Any], config_file: Path | None) -> list[dict[str, Any]]:
    """The run's effective configuration as ``{"key", "value", "source"}`` rows, redacted by name and value.

    The run keeps the values it started with (secrets already redacted), not where each came from; the
    source is told from them: ``default`` where the value is the schema's default, ``config.yaml`` where the
    home's file sets the key to that value (as written, or as redacted), else ``environment or --set`` (an
    ``AUTOTRAIN_*`` variable or a start's override).
    """
    in_file = file_values(config_file) if config_file is not None and config_file.exists() else {}
    fields = AutoTrainConfig.model_fields
    rows = []
    # Redacted as a mapping first: a value under a key that names a secret is hidden whole, by its name.
    shown = redacted(dict(config))
    assert isinstance(shown, dict)
    for key, value in config.items():
        field = fields.get(key)
        if field is not None and _same(value, field.default):
            source = "default"
        elif key in in_file and (_same(value, in_file[key]) or _same(value, redacted(in_file[key]))):
            source = "config.yaml"
        else:
            source = "environment or --set"
        rows.append({"key": redacted(key), "value": shown.get(key, "[REDACTED]"), "source": source})
    return rows


def _same(value: object, other: object) -> bool:
    """Equal as configured: YAML may say ``3`` where the run holds ``"3"`` or ``3.0``."""
    return value == other or str(value) == str(other)


def _field(state: RunState, name: str, config_file: Path | None) -> Any:
    if name == "outcome":
        return eval_line(state.evals, state.best_round, compact=True) if state.evals else None
    if name == "config":
        return config_rows(state.config, config_file)
    if name == "agents":
        return {stage: {key: getattr(agent, key) for key in _AGENT_KEYS} for stage, agent in state.agents.items()}
    value = getattr(state, name)
    if name == "usage":
        value = dict(value)
        value["estimated_cost_usd"] = round_cost(value.get("estimated_cost_usd"))
    elif hasattr(value, "model_dump"):
        value = value.model_dump(mode="python")
    elif isinstance(value, list) and value and hasattr(value[0], "model_dump"):
        value = [item.model_dump(mode="python") for item in value]
    elif isinstance(value, dict) and value and hasattr(next(iter(value.values())), "model_dump"):
        value = {key: item.model_dump(mode="python") for key, item in value.items()}
    return redacted(value)


def _source(state: RunState, name: str) -> Any:
    """What a field is projected from: when it is equal to last time, the projection is too."""
    if name == "outcome":
        return (state.evals, state.best_round)
    return getattr(state, name)


class Projector:
    """Projects a run state onto :data:`PAGE_FIELDS`, remembering the last projection of each field."""

    def __init__(self, config_file: Path | None = None) -> None:
        self.config_file = config_file
        self._sources: dict[str, Any] = {}
        self._values: dict[str, Any] = {}

    def changed(self, state: RunState) -> dict[str, Any]:
        """The fields whose value differs from the last call's, projected (every field the first time)."""
        changed = {}
        for name in PAGE_FIELDS:
            source = _source(state, name)
            if name in self._sources and self._sources[name] == source:
                continue
            self._sources[name] = source
            self._values[name] = changed[name] = _field(state, name, self.config_file)
        return changed

    def current(self) -> dict[str, Any]:
        """Every field as last projected (what a snapshot sends)."""
        return {name: self._values.get(name) for name in PAGE_FIELDS}


def page_events(records: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Event records as the page gets them: :data:`EVENT_KEYS` only, redacted; markers left out."""
    shown = redacted([{key: record.get(key) for key in EVENT_KEYS} for record in records if not is_marker(record)])
    assert isinstance(shown, list)
    return shown


def link(view: View, health: Health) -> dict[str, Any]:
    """The server's connection to the supervisor, as the page's banner reads it."""
    silence = view.silence_s
    return {
        "connected": view.connected,
        "silence_s": None if silence is None or not math.isfinite(silence) else round(silence, 1),
        "error": redacted(view.error),
        "health": health.state,
        "reason": redacted(health.reason),
    }
