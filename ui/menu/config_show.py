"""``autotrain-menu --config-show``: every effective config value and the source it comes from.

The values are the ones a run started from here would get (defaults < config.yaml < ``AUTOTRAIN_<NAME>``
in the environment < ``--set``), redacted like config.json; the source of each is ``default``, ``file``,
``env AUTOTRAIN_<NAME>`` or ``--set``. An invalid configuration prints its problems and exits 2.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from heidi_engine.bus.config import ConfigError, field_rule, load_config, value_sources
from heidi_engine.bus.exit_status import EXIT_OK
from heidi_engine.bus.redaction import clean
from heidi_engine.ui.menu.actions import Controller

__all__ = ["config_rows", "show_config"]


def config_rows(controller: Controller, overrides: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """``{field: {"value", "source", "rule"}}`` for every field; ConfigError when the config is invalid."""
    path = controller.config_path if controller.config_path.exists() else None
    config = load_config(path, overrides=overrides)
    sources = value_sources(path, overrides=overrides)
    values = config.redacted_dict()
    return {
        name: {"value": values[name], "source": sources[name], "rule": field_rule(name)} for name in values
    }


def _shown(value: object) -> str:
    if value is None:
        return '""'
    return str(value).lower() if isinstance(value, bool) else str(value)


def show_config(controller: Controller, overrides: Mapping[str, str], *, as_json: bool) -> int:
    """Print the effective configuration with sources (a table, or JSON); 2 with the problems if invalid."""
    try:
        rows = config_rows(controller, overrides)
    except ConfigError as exc:
        return controller.refuse_config(exc.problems)
    if as_json:
        controller.emit(rows)
        return EXIT_OK
    width = max(len(name) for name in rows)
    controller.say(f"{'FIELD':<{width}}  {'VALUE':<40}  SOURCE")
    for name, row in rows.items():
        controller.say(f"{name:<{width}}  {clean(_shown(row['value']), 40):<40}  {row['source']}")
    return EXIT_OK
