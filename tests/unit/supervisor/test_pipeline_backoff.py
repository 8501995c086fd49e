"""Restart backoff grows and is capped."""

from __future__ import annotations

from heidi_engine.supervisor.pipeline import BACKOFF_MAX_S, backoff_s


def test_backoff_doubles_and_caps() -> None:
    assert [backoff_s(n) for n in range(1, 6)] == [1.0, 2.0, 4.0, 8.0, 16.0]
    assert backoff_s(50) == BACKOFF_MAX_S
