"""What teacher calls spent: the usage counters added up across attempts, samples, batches and endpoints."""

from __future__ import annotations

from dataclasses import dataclass, fields

__all__ = ["TeacherUsage"]

_BUS_COUNTERS = ("requests_sent", "input_tokens", "output_tokens", "rate_limits_hit", "retries")


@dataclass(frozen=True)
class TeacherUsage:
    """What teacher calls spent; added up across attempts, samples and batches.

    The first five are the bus's usage counters. ``cached_input_tokens`` (part of ``input_tokens``) are
    priced at the cached rate; ``unmetered`` counts replies that reported no usage (their cost is
    unknown); ``timed_out`` attempts may still be billed, up to ``timed_out_input_max`` input and
    ``timed_out_output_max`` output tokens (the request's bytes and its token cap).
    """

    requests_sent: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    rate_limits_hit: int = 0
    retries: int = 0
    cached_input_tokens: int = 0
    unmetered: int = 0
    timed_out: int = 0
    timed_out_input_max: int = 0
    timed_out_output_max: int = 0

    def __add__(self, other: TeacherUsage) -> TeacherUsage:
        if not isinstance(other, TeacherUsage):
            return NotImplemented
        return TeacherUsage(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    def most(self, other: TeacherUsage) -> TeacherUsage:
        """Each counter the larger of the two: two records of the same requests, either perhaps short."""
        return TeacherUsage(*(max(getattr(self, f.name), getattr(other, f.name)) for f in fields(self)))

    def as_delta(self) -> dict[str, int]:
        """The five bus counters by name, ready for an event's ``usage_delta``."""
        return {name: getattr(self, name) for name in _BUS_COUNTERS}

    def record(self) -> dict[str, int]:
        """Every counter that is not zero, plus the five bus counters: what the round's files keep."""
        extra = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in _BUS_COUNTERS}
        return {**self.as_delta(), **{k: v for k, v in extra.items() if v}}

    @classmethod
    def from_record(cls, record: object) -> TeacherUsage:
        """Read :meth:`record` back; unknown keys and bad values are ignored."""
        if not isinstance(record, dict):
            return cls()
        values = {f.name: record.get(f.name) for f in fields(cls)}
        return cls(
            **{
                k: v if isinstance(v, int) and not isinstance(v, bool) and v > 0 else 0
                for k, v in values.items()
            }
        )
