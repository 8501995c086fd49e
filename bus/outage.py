"""The teacher's outage as the bus carries it: the generate stage parked on an unreachable teacher, or back.

When the teacher stays unreachable past a request's retries, the generate stage parks and sends one probe
request every ``TEACHER_PARK_INTERVAL_S`` until one gets through. It says so in the ``outage`` of a
:class:`~heidi_engine.bus.state.TeacherSample` when it parks, after each failed probe (the next probe moves
on) and when a probe gets through. The reducer keeps the parked one in ``RunState.teacher_outage`` until
then, or until the next boundary of a stage or of the run, so every viewer can say "teacher unreachable
since …" and the health is degraded meanwhile.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from heidi_engine.bus.event import MAX_DELTA, RAW_TEXT_MAX, TS_PATTERN
from heidi_engine.bus.redaction import clean

__all__ = ["PROBE_INTERVAL_MAX_S", "REASON_MAX", "TeacherOutage", "health_reason"]

REASON_MAX = 200
PROBE_INTERVAL_MAX_S = 86_400.0


class TeacherOutage(BaseModel):
    """The generate stage's teacher is unreachable (``parked``) or answers again (``recovered``).

    ``since`` is when the outage began and ``next_probe_at`` when the next probe goes out (ISO 8601 UTC
    wall-clock times); ``reason`` is the last failure, redacted; ``jobs_waiting`` the requests held back.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)

    state: Literal["parked", "recovered"]
    since: str = Field(pattern=TS_PATTERN)
    retry_every_s: float = Field(gt=0, le=PROBE_INTERVAL_MAX_S)
    next_probe_at: str | None = Field(default=None, pattern=TS_PATTERN)
    jobs_waiting: int = Field(default=0, ge=0, le=MAX_DELTA)
    reason: str = Field(default="", max_length=RAW_TEXT_MAX)

    @field_validator("reason")
    @classmethod
    def _clean_reason(cls, value: str) -> str:
        # A provider's words: they may echo a key or carry a terminal escape.
        return clean(value, REASON_MAX)

    def describe(self) -> str:
        """``teacher unreachable since <since>``: the health's reason while parked."""
        return f"teacher unreachable since {self.since}"


def health_reason(problem: str | None, outage: TeacherOutage | None) -> str | None:
    """Why a supervisor that answers is not healthy: its own problem (a full disk), the teacher's outage,
    or both; ``None`` when neither."""
    parts = [part for part in (problem, outage.describe() if outage is not None else None) if part]
    return "; ".join(parts) or None
