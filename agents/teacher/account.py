"""The generate stage's account of its teacher: what it used and spent, and what is still to report.

:class:`TeacherAccount` adds up the usage of every reply and failure (what the round's files already hold
included), keeps the run's estimated spend against ``MAX_COST_USD`` (requests in flight reserve their worst
case, see :mod:`heidi_engine.agents.teacher.spend`; whether one more may be sent is
:mod:`heidi_engine.agents.teacher.budget`'s call), and gathers what happened since the last progress
event: counters, usage, a few notes, the streaming speed, and a pool's per-endpoint usage
(:mod:`heidi_engine.agents.teacher.endpoints`). A batch is due every ``batch_size`` results or two seconds;
the stage sends it (:meth:`TeacherAccount.flush`).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from heidi_engine.agents.teacher.base import Completion, Teacher
from heidi_engine.agents.teacher.client import OpenAITeacher
from heidi_engine.agents.teacher.endpoints import EndpointSampler
from heidi_engine.agents.teacher.pricing import Price
from heidi_engine.agents.teacher.spend import Spend, cost_note, money
from heidi_engine.agents.teacher.usage import TeacherUsage
from heidi_engine.bus.event import COST_FIELD, USAGE_COUNT_NAMES
from heidi_engine.bus.state import TeacherSample

__all__ = ["NOTES_MAX", "Batch", "TeacherAccount", "recorded_usage"]

NOTES_MAX = 3  # notes one progress event carries
_FLUSH_S = 2.0


def recorded_usage(rows: Iterable[dict[str, Any]], *, nested: bool) -> TeacherUsage:
    """The usage the rows of a round's file record (under ``metadata`` when ``nested``), added up."""
    total = TeacherUsage()
    for row in rows:
        holder = row.get("metadata") if nested else row
        total += TeacherUsage.from_record(holder.get("usage") if isinstance(holder, dict) else None)
    return total


@dataclass(frozen=True)
class Batch:
    """What happened since the last progress event: its counters, usage delta, notes and speed."""

    counters: dict[str, int]
    usage: dict[str, float | int | None]
    notes: tuple[str, ...]
    warn: bool
    speed: str  # "; time to first token ..., ... tokens/s", or "" when nothing was streamed


class TeacherAccount:
    """Usage and estimated spend of one teacher model over the run, and the batch pending report."""

    def __init__(
        self,
        model: str,
        table: Mapping[str, Price],
        max_tokens: int,
        usage: TeacherUsage,
        *,
        batch_size: int,
        budget: float | None,
    ) -> None:
        self.usage = usage  # this round's, what is on disk included
        self.spend = Spend(model, table, max_tokens)
        self.spent = 0.0  # run-wide estimated cost, set by catch_up()
        self.budget = budget  # MAX_COST_USD
        self.endpoints: EndpointSampler | None = None  # a pool's per-endpoint usage, sent after each flush
        self._batch_size = batch_size
        self._ttft: list[float] = []
        self._decode: list[tuple[int, float]] = []
        self._counters: Counter[str] = Counter()
        self._pending = TeacherUsage()
        self._notes: list[str] = []
        self._warn = False
        self._since = 0
        self._last = time.monotonic()

    def cost_of(self, usage: TeacherUsage) -> float | None:
        """Estimated USD of ``usage``; None when unknown."""
        return self.spend.cost_of(usage)

    def usage_delta(self, usage: TeacherUsage) -> dict[str, float | int | None]:
        """``usage`` as an event's usage delta: the counters that are not zero, with their cost."""
        delta: dict[str, float | int | None] = {k: v for k, v in usage.as_delta().items() if v}
        if delta:
            delta[COST_FIELD] = self.cost_of(usage)
        return delta

    def catch_up(self, counted: Mapping[str, float], run_cost: float) -> dict[str, float | int | None]:
        """The usage delta of what this round used beyond the ``counted`` usage (its cost: the round's
        less what was counted, a request lost in flight at its most); learns the run's spend (``run_cost``
        known from the events, plus that)."""
        used = self.usage.as_delta()
        behind = {name: max(0, used[name] - int(counted.get(name, 0))) for name in USAGE_COUNT_NAMES}
        counted_cost = float(counted.get(COST_FIELD, 0.0))
        # For the budget, a reply that reported no usage costs what its tokens say; the event says unknown.
        known = self.cost_of(replace(self.usage, unmetered=0)) or 0.0
        self.spent = run_cost + max(0.0, known - counted_cost)
        if not any(behind.values()):
            return {}
        total = self.cost_of(self.usage)
        return {
            **{k: v for k, v in behind.items() if v},
            COST_FIELD: None if total is None else max(0.0, total - counted_cost),
        }

    def watch_endpoints(self, teacher: Teacher) -> None:
        """With a pool of servers behind ``teacher``, send each one's usage after each progress event."""
        if isinstance(teacher, OpenAITeacher) and len(teacher.endpoints()) > 1:
            self.endpoints = EndpointSampler(teacher.endpoints, self.cost_of)

    def reserve(self, job_id: str, messages: list[dict[str, str]]) -> None:
        """Reserve the worst-case cost of a request about to be sent."""
        self.spend.reserve(job_id, messages)

    def worst_case(self, messages: list[dict[str, str]]) -> float:
        """The most one request with these messages can cost."""
        return self.spend.worst_case(messages)

    def fits(self, worst: float, *, beside_in_flight: bool) -> bool:
        """Whether one more request of cost ``worst`` at most stays within the budget (always, without
        one): on top of the run's spend, and of the reservations in flight when ``beside_in_flight``."""
        if self.budget is None:
            return True
        reserved = self.spend.reserved() if beside_in_flight else 0.0
        return self.spent + reserved + worst <= self.budget

    def landed_all(self) -> None:
        """Nothing is in flight any more: drop what is still reserved."""
        self.spend.release_all()

    def budget_reached(self, worst: float) -> str:
        """Why generation stopped for the budget, with the amounts: the spend, and the worst case of the
        request that did not fit (``worst``)."""
        spent, budget = money(self.spent), money(self.budget)
        if self.budget is not None and self.spent > self.budget:
            return f"budget reached: spent {spent}, which passes MAX_COST_USD {budget}"
        return (
            f"budget reached: spent {spent}; one more request could cost up to {money(worst)}, which would "
            f"pass MAX_COST_USD {budget}"
        )

    def record(
        self, usage: TeacherUsage, counter: str | None, note: str | None = None, job_id: str | None = None
    ) -> bool:
        """Count one result (settling ``job_id``'s reservation); True when a batch is due."""
        self.usage += usage
        self._pending += usage
        self.spent += self.spend.settle(job_id, usage) if job_id else self.cost_of(usage) or 0.0
        if counter is not None:
            self._counters[counter] += 1
        if note is not None and len(self._notes) < NOTES_MAX:
            self._notes.append(note)
        self._since += 1
        return self._since >= self._batch_size or time.monotonic() - self._last >= _FLUSH_S

    def hold(self, usage: TeacherUsage) -> None:
        """Report ``usage`` in the next batch only (a fatal failure: the stage is about to end)."""
        self._pending += usage
        self._since += 1

    def warn(self) -> None:
        """Send the next batch as a warning."""
        self._warn = True

    def timing(self, result: Completion) -> None:
        """Remember a streamed reply's time to first token and decoding speed."""
        if result.ttft_s is not None:
            self._ttft.append(result.ttft_s)
            if result.decode_s and not result.usage.unmetered:  # a reply without usage counted no tokens
                self._decode.append((result.usage.output_tokens, result.decode_s))

    def flush(self, send: Callable[[Batch], None]) -> TeacherSample | None:
        """``send`` what happened since the last batch, if anything did; the per-endpoint sample to send
        after it."""
        if not self._since:
            return None
        teacher_sample = self.endpoints.sample() if self.endpoints is not None else None
        send(
            Batch(
                counters=dict(self._counters),
                usage=self.usage_delta(self._pending),
                notes=tuple(self._notes),
                warn=self._warn,
                speed=self._speed(),
            )
        )
        self._counters.clear()
        self._pending = TeacherUsage()
        self._notes.clear()
        self._ttft.clear()
        self._decode.clear()
        self._warn = False
        self._since = 0
        self._last = time.monotonic()
        return teacher_sample

    def summary(self) -> str:
        """Requests, tokens and the estimated cost of the round, for its closing message."""
        usage = self.usage
        return (
            f"{usage.requests_sent} requests, {usage.input_tokens} input and {usage.output_tokens} "
            f"output tokens, estimated cost {cost_note(usage, self.cost_of(usage))}"
        )

    def _speed(self) -> str:
        """Streaming figures of this batch: median time to first token and output tokens per second."""
        parts = []
        if self._ttft:
            parts.append(f"time to first token {sorted(self._ttft)[len(self._ttft) // 2]:.2f} s")
        tokens, seconds = sum(t for t, _ in self._decode), sum(s for _, s in self._decode)
        if self._ttft and seconds > 0:
            parts.append(f"{tokens / seconds:,.0f} tokens/s")
        elif self._ttft:
            parts.append("tokens/s unknown (no usage reported)")
        return "; " + ", ".join(parts) if parts else ""
