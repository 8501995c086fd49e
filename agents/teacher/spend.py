"""What the generate stage's teacher calls cost, and what the requests in flight could still cost.

- A reply without usage makes its cost unknown (``None``, never $0); once unknown, a sum stays unknown.
- Tokens served from the provider's prompt cache are priced at the cached rate.
- A timed-out attempt may still be billed: it costs its upper bound (every byte of the request as an
  input token, the full token cap as output), so the estimate errs high, never low.
- For ``MAX_COST_USD``, every request in flight reserves its worst case until it lands, so the budget is
  not overshot by the requests already sent; a request is sent only while its own worst case fits beside
  them (:mod:`heidi_engine.agents.teacher.budget`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from heidi_engine.agents.teacher.pricing import Price, estimate_cost
from heidi_engine.agents.teacher.usage import TeacherUsage

__all__ = ["Spend", "cost_note", "money"]


class Spend:
    """Cost of usage for one teacher model, and the worst-case reservations of requests in flight."""

    def __init__(self, model: str, table: Mapping[str, Price], max_tokens: int) -> None:
        self.model = model
        self.table = table
        self.max_tokens = max_tokens
        self._reserved: dict[str, float] = {}

    def cost_of(self, usage: TeacherUsage) -> float | None:
        """Estimated USD of ``usage``; None when the model is unpriced or a reply reported no usage."""
        if usage.unmetered:
            return None
        exact = estimate_cost(
            self.model, usage.input_tokens, usage.output_tokens, self.table, usage.cached_input_tokens
        )
        bound = estimate_cost(self.model, usage.timed_out_input_max, usage.timed_out_output_max, self.table)
        return None if exact is None or bound is None else exact + bound

    def worst_case(self, messages: list[dict[str, str]]) -> float:
        """The most one request with these messages can cost (a token is at least one byte)."""
        size = len(json.dumps(messages).encode("utf-8"))
        return estimate_cost(self.model, size, self.max_tokens, self.table) or 0.0

    def reserve(self, job_id: str, messages: list[dict[str, str]]) -> None:
        """Hold the worst case of the job's request until :meth:`settle`."""
        self._reserved[job_id] = self.worst_case(messages)

    def settle(self, job_id: str, usage: TeacherUsage) -> float:
        """Drop the job's reservation; what it cost for the budget (its worst case when unmetered)."""
        reserved = self._reserved.pop(job_id, 0.0)
        cost = self.cost_of(usage)
        return reserved if cost is None else cost

    def reserved(self) -> float:
        """What the requests in flight could still cost, at their worst."""
        return sum(self._reserved.values())

    def release_all(self) -> None:
        """Drop every reservation: nothing is in flight (a job kept through an outage reserves again when
        it is asked again)."""
        self._reserved.clear()


def money(cost: float | None) -> str:
    """A cost for a message: ``$0.0123``, ``$0.000042`` below a cent, ``unknown`` for ``None``."""
    if cost is None:
        return "unknown"
    return f"${cost:,.4f}" if cost >= 0.01 or cost == 0 else f"${cost:.6f}"


def cost_note(usage: TeacherUsage, cost: float | None) -> str:
    """The cost with what makes it unknown or an upper bound."""
    notes = []
    if usage.cached_input_tokens:
        notes.append(f"{usage.cached_input_tokens} input tokens cached")
    if usage.unmetered:
        notes.append(f"unknown: {usage.unmetered} teacher repl(ies) reported no token usage")
    if usage.timed_out:
        notes.append(f"counting {usage.timed_out} timed-out attempt(s) at their most")
    return money(cost) + (f" ({'; '.join(notes)})" if notes else "")
