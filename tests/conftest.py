"""Makes the helper packages under tests/ (e.g. ``fakes``) importable from every test."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from harness import SupervisorProc, short_home


@pytest.fixture
def home() -> Iterator[Path]:
    """A temporary AutoTrain home with a short path."""
    with short_home() as folder:
        yield folder


@pytest.fixture
def start_supervisor(home: Path) -> Iterator[Callable[..., SupervisorProc]]:
    """Start real supervisors on ``home``; every one is stopped (and its agents gone) after the test."""
    started: list[SupervisorProc] = []

    def start(**kwargs: Any) -> SupervisorProc:
        proc = SupervisorProc(kwargs.pop("home", home), **kwargs)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()
