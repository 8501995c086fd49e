"""The README's commands and dashboard keys tables say exactly what ``--help`` and the ``?`` screen say."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from heidi_engine.supervisor.cli import _parser as supervisor_parser
from heidi_engine.ui.dash_cli import _parser as dash_parser
from heidi_engine.ui.dashboard.screen import HELP_KEYS
from heidi_engine.ui.menu.interactive import OPTIONS
from heidi_engine.ui.menu_cli import _parser as menu_parser

ROOT = Path(__file__).resolve().parents[2]
PARSERS = {"autotrain-supervisor": supervisor_parser, "autotrain-menu": menu_parser, "autotrain-dash": dash_parser}


def _section(title: str) -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    start = readme.index(f"{title}\n")
    end = readme.find("\n#", start + len(title))
    return readme[start : end if end >= 0 else None]


def _table_rows(text: str) -> list[list[str]]:
    rows = []
    for line in text.splitlines():
        if line.startswith("|") and not line.startswith("|---"):
            rows.append([cell.strip() for cell in line.strip().strip("|").split(" | ")])
    return rows[1:]  # the header row


def _flags(parser: argparse.ArgumentParser) -> set[str]:
    return {flag for action in parser._actions for flag in action.option_strings if flag.startswith("--")} - {"--help"}


def keys_table() -> str:
    """The README's dashboard keys table, as the ``?`` screen lists them."""
    lines = ["| key | action |", "|---|---|"]
    lines += [f"| `{keys}` | {what} |" for keys, what in HELP_KEYS]
    return "\n".join(lines)


def test_every_flag_of_every_command_is_in_the_readme_and_no_other() -> None:
    rows = _table_rows(_section("## Commands"))
    for program, parser in PARSERS.items():
        documented = {
            flag
            for command, what in rows
            if command.startswith(f"`{program}")
            for flag in re.findall(r"--[a-z][a-z-]*", command + " " + what)
        }
        assert documented == _flags(parser()), (program, sorted(documented ^ _flags(parser())))


def test_the_menu_row_lists_the_menu_options_in_order() -> None:
    listed = ", ".join(f"{number} {label}" for number, label in enumerate(OPTIONS, 1))
    assert listed in _section("## Commands")


def test_the_keys_table_is_the_help_screen() -> None:
    assert keys_table() in _section("### Dashboard keys"), "README's keys table differs from HELP_KEYS:\n" + keys_table()
