"""The README's configuration reference is generated from the schema and must not drift."""

from __future__ import annotations

from pathlib import Path

from heidi_engine.bus.config import config_reference_markdown

ROOT = Path(__file__).resolve().parents[2]


def test_readme_has_the_current_config_reference() -> None:
    assert config_reference_markdown() in (ROOT / "README.md").read_text(encoding="utf-8"), (
        "README.md's configuration table is stale: regenerate it with scripts/gen_config_reference.py"
    )


def test_readme_names_the_two_commands_and_ci_runs_the_test_one() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "make demo" in readme and "make test" in readme
    assert "make test" in (ROOT / ".ci" / "run").read_text(encoding="utf-8")
