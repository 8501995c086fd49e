"""Shell completion (argcomplete) for ``autotrain-menu`` and ``autotrain-dash``: run ids and ``--set``.

Enable it once per shell: ``eval "$(register-python-argcomplete autotrain-menu)"`` (and the same for
``autotrain-dash``), or ``activate-global-python-argcomplete`` for every command that supports it. Run
ids come from ``<home>/runs`` (``--home`` on the line, else ``$AUTOTRAIN_HOME``, else the current
directory); ``--set`` completes the config fields as ``KEY=``, then the values a field allows.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, get_args

from heidi_engine.bus.config import FIELD_NAMES, AutoTrainConfig
from heidi_engine.bus.event import is_run_id
from heidi_engine.bus.options import resolve_home

__all__ = ["enable", "run_ids", "set_values"]


def run_ids(prefix: str, parsed_args: argparse.Namespace, **_kwargs: Any) -> list[str]:
    """The run ids of the home named on the command line, newest first."""
    home = getattr(parsed_args, "home", None)
    root = resolve_home(Path(home) if home else None) / "runs"
    if not root.is_dir():
        return []
    names = (p.name for p in root.iterdir() if p.is_dir() and is_run_id(p.name) and p.name.startswith(prefix))
    return sorted(names, reverse=True)


def set_values(prefix: str, **_kwargs: Any) -> list[str]:
    """``KEY=`` for every config field; after ``KEY=``, the values the field allows (when it lists them)."""
    key, sep, _value = prefix.partition("=")
    if not sep:
        return [f"{name}=" for name in FIELD_NAMES if name.startswith(prefix.upper())]
    info = AutoTrainConfig.model_fields.get(key)
    choices = [str(choice) for choice in get_args(info.annotation)] if info is not None else []
    return [f"{key}={choice}" for choice in choices if f"{key}={choice}".startswith(prefix)]


def enable(parser: argparse.ArgumentParser) -> None:
    """Attach the completers to ``parser``'s options and answer the shell if it is asking (then exits)."""
    import argcomplete

    for action in parser._actions:
        if action.dest in ("run", "resume_run"):
            action.completer = run_ids  # type: ignore[attr-defined]
        elif action.dest == "set":
            action.completer = set_values  # type: ignore[attr-defined]
    argcomplete.autocomplete(parser)
