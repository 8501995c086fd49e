"""A run's totals: counters and usage summed from events' deltas, within bounds.

Every total in the project is summed by :func:`add_deltas`, or for a batch of events at once, to the very
same totals, by :class:`Sums` and :func:`add_sums`. An event's deltas are bounded by its schema
(:data:`~heidi_engine.bus.event.MAX_DELTA`); a total stops at :data:`~heidi_engine.bus.event.MAX_TOTAL`,
which the supervisor keeps by refusing an event that would pass it (:func:`overflow`), and a file written
before these bounds is brought back within them as it loads (:func:`clamp_totals`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from functools import reduce
from operator import add
from typing import Any

from heidi_engine.bus.event import (
    COST_FIELD,
    COUNTER_NAMES,
    MAX_TOTAL,
    MAX_TOTAL_COST_USD,
    USAGE_COUNT_NAMES,
    within,
)

__all__ = ["Sums", "add_deltas", "add_sums", "clamp_totals", "overflow", "zero_counters", "zero_usage"]

log = logging.getLogger(__name__)


def zero_counters() -> dict[str, int]:
    """Every counter at 0."""
    return dict.fromkeys(COUNTER_NAMES, 0)


def zero_usage() -> dict[str, float | int | None]:
    """Every usage field at 0 (the cost at 0.0: known, nothing spent)."""
    usage: dict[str, float | int | None] = dict.fromkeys(USAGE_COUNT_NAMES, 0)
    usage[COST_FIELD] = 0.0
    return usage


def clamp_totals(where: str, counters: Any, usage: Any) -> None:
    """Bring totals read from a file back in bounds (in place, each fix logged): a home written by an older
    version may hold a count past :data:`MAX_TOTAL` or a cost that is not finite, and must still load.

    Counts are clamped to 0..MAX_TOTAL; a cost that is negative or past MAX_TOTAL_COST_USD is clamped, and
    one that is not a number at all (NaN, Infinity) becomes unknown (null). Values of the wrong type are
    left for validation to refuse.
    """
    for totals in (counters, usage):
        if not isinstance(totals, dict):
            continue
        for name, value in totals.items():
            fixed = _in_bounds(name, value)
            if fixed is not value:
                shown = f"a {value.bit_length()}-bit int" if isinstance(value, int) and abs(value) >= 10**30 else repr(value)
                log.warning("%s: %s total was %s, out of range; loaded as %r", where, name, shown, fixed)
                totals[name] = fixed


def _in_bounds(name: str, value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return value
    if name == COST_FIELD or isinstance(value, float):  # the only totals that are not counts are costs
        if within(value, MAX_TOTAL_COST_USD):
            return value
        if isinstance(value, int):  # an int past what a float holds is past the bound too
            return 0.0 if value < 0 else MAX_TOTAL_COST_USD
        return None if not math.isfinite(value) else float(min(max(value, 0.0), MAX_TOTAL_COST_USD))
    if isinstance(value, int):
        return value if 0 <= value <= MAX_TOTAL else min(max(value, 0), MAX_TOTAL)
    return value


def overflow(
    counters: Mapping[str, int],
    usage: Mapping[str, float | int | None],
    counters_delta: Mapping[str, int],
    usage_delta: Mapping[str, float | int | None],
) -> str | None:
    """The name of the first total that adding these deltas would carry past its bound, else ``None``."""
    for name, delta in counters_delta.items():
        if counters.get(name, 0) + delta > MAX_TOTAL:
            return name
    for name, value in usage_delta.items():
        current = usage.get(name)
        if value is None or current is None:
            continue
        if current + value > (MAX_TOTAL_COST_USD if name == COST_FIELD else MAX_TOTAL):
            return name
    return None


def add_deltas(
    counters: dict[str, int],
    usage: dict[str, float | int | None],
    counters_delta: Mapping[str, int],
    usage_delta: Mapping[str, float | int | None],
) -> None:
    """Add an event's deltas to running totals (in place): how every total in the project is summed."""
    for name, delta in counters_delta.items():
        counters[name] = counters.get(name, 0) + delta
    for name, value in usage_delta.items():
        if name == COST_FIELD:
            # Unknown is sticky: once any part of the cost is unknown, the total is unknown.
            current = usage.get(COST_FIELD, 0.0)
            usage[COST_FIELD] = None if value is None or current is None else current + value
        else:
            usage[name] = (usage.get(name) or 0) + (value or 0)


class Sums:
    """A batch of events' deltas added up once: each count summed (ints sum alike in any order), each
    cost kept in order (a float sum depends on it), for :func:`add_sums` and the ledger's stage totals.

    It reads the events' records (dicts are read faster than models). ``usage`` holds the cost's name
    too, as 0, where its first known (not null) delta was: a fresh total takes its names in the order
    the events first gave them.
    """

    __slots__ = ("costs", "counters", "usage")

    def __init__(self, records: Iterable[Mapping[str, Any]] = ()) -> None:
        counters: dict[str, int] = {}
        usage: dict[str, int] = {}
        costs: list[float | int | None] = []
        for record in records:
            for name, delta in record["counters_delta"].items():
                counters[name] = counters.get(name, 0) + delta
            usage_delta = record["usage_delta"]
            if usage_delta:
                for name, value in usage_delta.items():
                    if name != COST_FIELD:
                        usage[name] = usage.get(name, 0) + value
                    else:
                        costs.append(value)
                        if value is not None and name not in usage:
                            usage[name] = 0
        self.counters, self.usage, self.costs = counters, usage, costs

    @classmethod
    def merged(cls, parts: Iterable[Sums], costs: list[float | int | None]) -> Sums:
        """The sums of several parts of one batch, whose ``costs`` (in the batch's order) are given."""
        whole = cls()
        for part in parts:
            for mine, theirs in ((whole.counters, part.counters), (whole.usage, part.usage)):
                for name, total in theirs.items():
                    mine[name] = mine.get(name, 0) + total
        whole.costs = costs
        return whole

    def fits(self, counters: Mapping[str, Any], usage: Mapping[str, Any], missing: int | None = None) -> bool:
        """True when adding the sums gives exactly what adding each delta in turn does: every total they
        touch is an int (a file may hold a float) and so is every sum; a name the totals lack counts as
        ``missing`` (``None``: refused, since adding it now could put it out of the events' order)."""
        for totals, sums in ((counters, self.counters), (usage, self.usage)):
            for name, total in sums.items():
                if name != COST_FIELD and (totals.get(name, missing).__class__ is not int or total.__class__ is not int):
                    return False
        return missing is not None or not self.costs or COST_FIELD in usage


def add_sums(
    counters: dict[str, int], usage: dict[str, float | int | None], sums: Sums, records: Iterable[Mapping[str, Any]]
) -> None:
    """Add the :class:`Sums` of a batch of ``records`` to running totals: exactly what :func:`add_deltas`
    gives for each record in turn, which is what it does when the sums cannot give the same."""
    if not sums.fits(counters, usage):
        for record in records:
            add_deltas(counters, usage, record["counters_delta"], record["usage_delta"])
        return
    for name, total in sums.counters.items():
        counters[name] += total
    for name, total in sums.usage.items():
        if name != COST_FIELD:
            usage[name] = (usage[name] or 0) + total
    costs = sums.costs
    if costs:
        cost = usage[COST_FIELD]
        # Unknown is sticky, as in add_deltas; known costs are added one by one, in order.
        usage[COST_FIELD] = None if cost is None or None in costs else reduce(add, costs, cost)
