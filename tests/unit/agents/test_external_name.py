"""How an attached training script is named: ``external:NAME``, NAME from the caller or the script."""

from __future__ import annotations

import pytest

from heidi_engine.agents.bus_control import external_name
from heidi_engine.bus.state import TrainerSample


@pytest.mark.parametrize(
    ("name", "argv0", "expected"),
    [(None, "/home/me/my_train.py", "my_train"), ("sweep-3", "/x/train.py", "sweep-3"),
     (None, "/x/with space & €.py", "with-space"), (None, "", "script"), (None, "/x/...py", "script"),
     ("a" * 100, "", "a" * 64)],
)  # fmt: skip
def test_the_name_is_the_callers_else_the_scripts_made_fit_for_a_source(name: str | None, argv0: str, expected: str) -> None:
    got = external_name(name, argv0)
    assert got == expected
    TrainerSample(step=1, total=1, source=f"external:{got}")  # what the bus accepts
