"""``--wait``'s progress inside a stage: samples generated, steps trained, eval problems run, with an ETA.

Read from the supervisor's full state (the ``snapshot`` command, about once a second): the trainer's step
and its own ETA while training, the round's samples against SAMPLES_PER_ROUND while generating (the ETA
from the rate seen since following began in this stage), the problems run while evaluating.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from heidi_engine.ui.text import fmt_duration

__all__ = ["StageProgress"]


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


class StageProgress:
    """Turns successive states into ``step 40/100 · ETA 2m 10s``-style details (``None``: nothing to add)."""

    def __init__(self) -> None:
        self._start: tuple[str, int, float, int] | None = None  # stage, round, time, done when first seen

    def _eta(self, stage: str, round_no: int, now: float, done: int, total: int) -> str:
        if self._start is None or self._start[:2] != (stage, round_no):
            self._start = (stage, round_no, now, done)
            return ""
        _stage, _round, since, first = self._start
        if done <= first or now <= since or done >= total:
            return ""
        rate = (done - first) / (now - since)
        return f" · ETA {fmt_duration((total - done) / rate)}"

    def detail(self, state: Mapping[str, Any], now: float) -> str | None:
        """The in-stage progress of ``state`` (the ``snapshot`` command's ``state``) at monotonic ``now``."""
        stage, round_no = state.get("current_stage"), _int(state.get("current_round"))
        counters = state.get("counters") or {}
        if stage == "train":
            trainer = state.get("trainer") or {}
            step, total = _int(trainer.get("step")), _int(trainer.get("total"))
            if not total:
                return None
            eta = trainer.get("eta_s")
            return f"step {step}/{total}" + (f" · ETA {fmt_duration(eta)}" if isinstance(eta, int | float) else "")
        if stage == "generate":
            per_round = _int((state.get("config") or {}).get("SAMPLES_PER_ROUND"))
            if not per_round or not round_no:
                return None
            asked = _int(counters.get("teacher_generated")) + _int(counters.get("teacher_failed"))
            done = max(0, min(per_round, asked - per_round * (round_no - 1)))
            return f"sample {done}/{per_round}" + self._eta("generate", round_no, now, done, per_round)
        if stage == "eval":
            return f"{_int(counters.get('eval_total'))} problems run, {_int(counters.get('eval_pass'))} passed"
        return None
