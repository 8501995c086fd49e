"""Per-endpoint teacher usage for the bus: a pool's running totals turned into :class:`TeacherSample` deltas.

The generate stage sends one with each progress event, after it, so that a viewer's per-endpoint totals
add up to the run's teacher usage once both are applied. The cost of each endpoint's share is priced
like the run's (same model, same table).
"""

from __future__ import annotations

from collections.abc import Callable

from heidi_engine.agents.teacher.pool import EndpointReport
from heidi_engine.agents.teacher.usage import TeacherUsage
from heidi_engine.bus.event import COST_FIELD
from heidi_engine.bus.state import EndpointUsage, TeacherSample

__all__ = ["EndpointSampler"]

_IDLE: tuple[int, float, float | None, float | None] = (0, 0.0, None, None)


class EndpointSampler:
    """Remembers what was last sent per endpoint and makes the next delta sample."""

    def __init__(
        self, report: Callable[[], list[EndpointReport]], cost_of: Callable[[TeacherUsage], float | None]
    ) -> None:
        self._report = report
        self._cost_of = cost_of
        self._sent: dict[str, tuple[TeacherUsage, int]] = {}
        self._state: dict[str, tuple[int, float, float | None, float | None]] = {}

    def sample(self) -> TeacherSample | None:
        """What changed since the previous sample, or None when nothing did."""
        endpoints: dict[str, EndpointUsage] = {}
        for line in self._report():
            usage, errors = self._sent.get(line.name, (TeacherUsage(), 0))
            grown = _minus(line.usage, usage)
            state = (line.in_flight, round(line.out_for_s, 1), line.latency_p50_s, line.latency_p95_s)
            if grown == TeacherUsage() and line.errors == errors and self._state.get(line.name, _IDLE) == state:
                continue
            delta: dict[str, float | int | None] = {k: v for k, v in grown.as_delta().items() if v}
            if delta:
                delta[COST_FIELD] = self._cost_of(grown)
            endpoints[line.name] = EndpointUsage(
                usage=delta,
                errors=line.errors - errors,
                in_flight=line.in_flight,
                out_for_s=line.out_for_s,
                latency_p50_s=line.latency_p50_s,
                latency_p95_s=line.latency_p95_s,
            )
            self._sent[line.name] = (line.usage, line.errors)
            self._state[line.name] = state
        return TeacherSample(endpoints=endpoints) if endpoints else None


def _minus(total: TeacherUsage, before: TeacherUsage) -> TeacherUsage:
    """``total - before`` field by field (totals only grow)."""
    return TeacherUsage(*(a - b for a, b in zip(_values(total), _values(before), strict=True)))


def _values(usage: TeacherUsage) -> tuple[int, ...]:
    return tuple(getattr(usage, name) for name in usage.__dataclass_fields__)
