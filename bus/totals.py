"""A run's totals: counters and usage summed from events' deltas, within bounds.

Every total in the project is summed by :func:`add_deltas`. An event's deltas are bounded by its schema
(:data:`~heidi_engine.bus.event.MAX_DELTA`); a total stops at :data:`~heidi_engine.bus.event.MAX_TOTAL`,
which the supervisor keeps by refusing an event that would pass it (:func:`overflow`), and a file written
before these bounds is brought back within them as it loads (:func:`clamp_totals`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

from heidi_engine.bus.event import (
    COST_FIELD,
    COUNTER_NAMES,
    MAX_TOTAL,
    MAX_TOTAL_COST_USD,
    USAGE_COUNT_NAMES,
    within,
)

__all__ = ["add_deltas", "clamp_totals", "overflow", "zero_counters", "zero_usage"]

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
