"""What every teacher shares: a completion, a failure and its kind, an outage notice, and the protocol.

The HTTP client (:mod:`heidi_engine.agents.teacher.client`) and the in-process one
(:mod:`heidi_engine.agents.teacher.local`) both speak :class:`Teacher`, so the generate stage does not
care which backend it drives.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal, Protocol, TypeVar

from heidi_engine.agents.teacher.usage import TeacherUsage

__all__ = ["Completion", "ErrorKind", "Outage", "Teacher", "TeacherError"]

T = TypeVar("T")
ErrorKind = Literal["fatal", "transient", "incomplete", "sample"]


@dataclass(frozen=True)
class Completion:
    """One successful chat completion and what it cost, retries included.

    ``ttft_s`` (time to first token) is measured on streamed replies only; ``decode_s`` is the time
    from the first to the last byte of the successful attempt.
    """

    text: str
    usage: TeacherUsage
    model: str
    finish_reason: str | None
    ttft_s: float | None = None
    decode_s: float | None = None


class TeacherError(Exception):
    """A teacher call that failed for good; ``usage`` is what it spent, ``kind`` what to do about it."""

    def __init__(self, reason: str, usage: TeacherUsage, kind: ErrorKind = "sample") -> None:
        super().__init__(reason)
        self.reason = reason
        self.usage = usage
        self.kind: ErrorKind = kind


@dataclass(frozen=True)
class Outage:
    """What a teacher's ``map`` tells ``on_outage``: the teacher is unreachable, or back.

    ``state`` is "parked" when an outage starts, "waiting" on each failed probe, "recovered" when a
    request got through again; ``usage`` is what the failed attempts behind this notice spent.
    """

    state: Literal["parked", "waiting", "recovered"]
    since: str  # ISO 8601 UTC wall time the outage started
    retry_every_s: float
    reason: str
    usage: TeacherUsage
    jobs_waiting: int


class Teacher(Protocol):
    """What the generate stage drives: ``map`` jobs to replies, then ``close``."""

    model: str

    def map(
        self,
        jobs: Iterable[T],
        build_messages: Callable[[T], list[dict[str, str]]],
        on_done: Callable[[T, Completion | TeacherError], None],
        *,
        concurrency: int,
        should_continue: Callable[[], bool] = ...,
        on_outage: Callable[[Outage], None] | None = ...,
    ) -> None: ...

    def close(self) -> None: ...
