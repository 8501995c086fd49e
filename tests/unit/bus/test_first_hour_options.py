"""What a home without config.yaml lacks to run, the home checks, the packaging (issue 28, points 1, 3,
10 and 12), without sockets or subprocesses."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from heidi_engine.bus.config import load_config
from heidi_engine.bus.options import HomeError, open_home, unrunnable_defaults

REPO = Path(__file__).resolve().parents[3]


def test_the_built_in_defaults_need_a_key_and_a_cached_model(tmp_path: Path) -> None:
    env = {"HF_HOME": str(tmp_path)}
    problems = unrunnable_defaults(load_config(None, env={}), env)
    assert len(problems) == 2 and "$OPENAI_API_KEY" in problems[0] and "not in the local cache" in problems[1]
    (tmp_path / "hub" / "models--mistralai--Mistral-7B-Instruct-v0.2" / "snapshots").mkdir(parents=True)
    assert unrunnable_defaults(load_config(None, env={}), {**env, "OPENAI_API_KEY": "k"}) == []


def test_a_local_teacher_and_a_local_student_need_nothing(tmp_path: Path) -> None:
    config = load_config(None, env={}, overrides={"TEACHER_MODEL": f"local:{tmp_path}", "BASE_MODEL": str(tmp_path)})
    assert unrunnable_defaults(config, {}) == []


def test_custom_agents_are_not_judged() -> None:
    env = {f"AUTOTRAIN_AGENT_{s}": "true" for s in ("GENERATE", "TRAIN", "EVAL")}
    assert unrunnable_defaults(load_config(None, env={}), env) == []


def test_open_home_creates_for_starters_and_names_for_readers(tmp_path: Path) -> None:
    with pytest.raises(HomeError, match="does not exist"):
        open_home(tmp_path / "h", create=False)
    assert open_home(tmp_path / "h", create=True).stat().st_mode & 0o777 == 0o700
    (tmp_path / "f").write_text("")
    with pytest.raises(HomeError, match="is not a folder"):
        open_home(tmp_path / "f", create=True)


def test_pyproject_packages_its_data_and_an_spdx_license() -> None:
    # Read as text: tomllib is not in Python 3.10, which the project supports.
    text = (REPO / "pyproject.toml").read_text()
    assert re.search(r'^license = "Apache-2.0"', text, re.M), "an SPDX string, not the deprecated table"
    assert '    "heidi_engine.agents.data",\n' in text
    assert re.search(r'^"heidi_engine.ui.menu" = \["offline_config.yaml"\]', text, re.M)
    assert (REPO / "ui" / "menu" / "offline_config.yaml").read_bytes() == (REPO / "config.yaml").read_bytes()


def test_the_quick_start_puts_the_commands_on_path() -> None:
    readme = (REPO / "README.md").read_text()
    quick = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    assert "source .venv/bin/activate" in quick and ".venv/bin/autotrain-menu" in quick
    assert "autotrain-menu --init" in quick
