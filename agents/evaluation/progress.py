"""How far the eval stage got, as progress events: answers generated per batch, answers tested per problem.

Without them the stage says nothing from the model load to its report, minutes or hours. Each phase sends
its first and last count and, between them, at most one event every :data:`EVERY_S` seconds (a batch on a
small model takes a fraction of that). The words are the ones ``autotrain-menu --wait`` reads
(``generated 16/40 answers``, ``tested 12/40 answers, 7 passed``); the counters still come once, with the
report, so a restarted stage never counts twice.
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["EVERY_S", "EvalProgress"]

EVERY_S = 2.0


class EvalProgress:
    """Sends ``eval round N: ...`` through ``send`` (a stage's ``rt.progress``); ``clock`` is injectable."""

    def __init__(
        self, send: Callable[[str], None], round_no: int, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._send = send
        self._round = round_no
        self._clock = clock
        self._last: tuple[str, float] | None = None  # the phase and time of the latest event sent

    def _report(self, phase: str, done: int, total: int, text: str) -> None:
        if total <= 0:
            return  # nothing to do in this phase: nothing to say either
        now = self._clock()
        first = self._last is None or self._last[0] != phase
        if first or done >= total or self._last is None or now - self._last[1] >= EVERY_S:
            self._last = (phase, now)
            self._send(f"eval round {self._round}: {text}")

    def generated(self, done: int, total: int) -> None:
        """``done`` of ``total`` answers generated (both variants' answers counted)."""
        self._report("generated", done, total, f"generated {done}/{total} answers")

    def tested(self, done: int, total: int, passed: int) -> None:
        """``done`` of ``total`` answers run against their tests in the sandbox, ``passed`` of them passed."""
        self._report("tested", done, total, f"tested {done}/{total} answers, {passed} passed")
