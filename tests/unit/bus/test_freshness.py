"""Freshness of commands: once each, and only while recent; bounded memory never lets a replay through."""

from __future__ import annotations

from heidi_engine.bus.freshness import Nonces

NOW = 1_000_000.0


def test_a_command_is_taken_once_and_only_within_the_window() -> None:
    nonces = Nonces(window_s=300)
    assert nonces.check(("menu", "s1", "a"), NOW, NOW) is None
    assert nonces.check(("menu", "s1", "a"), NOW, NOW + 1) == "replayed"
    assert nonces.check(("menu", "s1", "b"), NOW + 299, NOW) is None  # a clock a little ahead
    assert nonces.check(("menu", "s1", "c"), NOW - 301, NOW) == "stale"  # e.g. frames stamped ts=0
    assert nonces.check(("menu", "s1", "d"), 0.0, NOW) == "stale"
    assert nonces.check(("menu", "s1", "e"), float("nan"), NOW) == "stale"
    assert nonces.check(("menu", "s2", "a"), NOW, NOW + 2) is None  # another session's id


def test_a_forgotten_nonce_cannot_be_replayed() -> None:
    nonces = Nonces(window_s=300, max_nonces=3)
    for i, nonce in enumerate("abcd"):
        assert nonces.check(("x", "s", nonce), NOW + i, NOW + i) is None
    # "a" was forgotten to keep three: its replay, and anything as old, is refused as stale.
    assert nonces.check(("x", "s", "a"), NOW, NOW + 5) == "stale"
    assert nonces.check(("x", "s", "z"), NOW, NOW + 5) == "stale"
    assert nonces.check(("x", "s", "b"), NOW + 1, NOW + 5) == "replayed"
    assert nonces.check(("x", "s", "y"), NOW + 5, NOW + 5) is None
