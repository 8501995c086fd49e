"""Teacher cost estimation: a built-in price table merged with a run's ``pricing.json``.

Prices are USD per 1M tokens (input, output). A model that is not priced has an *unknown* cost
(``None``), never 0: a user who sees "$0.00" for an unpriced model would be misled. Local teachers
(``local:<model>``) cost nothing.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Price:
    """USD per 1M input and output tokens."""

    input_per_m: float
    output_per_m: float


# Public list prices of the seed era (USD per 1M tokens). Dated snapshots resolve to their family.
BUILTIN_PRICES: dict[str, Price] = {
    "gpt-4o": Price(2.50, 10.00),
    "gpt-4o-mini": Price(0.15, 0.60),
    "gpt-4-turbo": Price(10.00, 30.00),
    "gpt-4": Price(30.00, 60.00),
    "gpt-3.5-turbo": Price(0.50, 1.50),
    "gpt-4.1": Price(2.00, 8.00),
    "gpt-4.1-mini": Price(0.40, 1.60),
    "gpt-4.1-nano": Price(0.10, 0.40),
    "o1": Price(15.00, 60.00),
    "o1-mini": Price(3.00, 12.00),
    "o3-mini": Price(1.10, 4.40),
    "claude-3-5-sonnet": Price(3.00, 15.00),
    "claude-3-5-haiku": Price(0.80, 4.00),
    "claude-3-opus": Price(15.00, 75.00),
    "claude-3-sonnet": Price(3.00, 15.00),
    "claude-3-haiku": Price(0.25, 1.25),
    "claude-3-7-sonnet": Price(3.00, 15.00),
}

_SNAPSHOT_SUFFIXES = ("-latest",)


class PricingError(ValueError):
    """``pricing.json`` is unreadable or malformed; the message names the file and the entry."""


def _parse_entry(path: Path, name: object, entry: object) -> tuple[str, Price]:
    if not isinstance(name, str) or not name:
        raise PricingError(f"{path}: model names must be non-empty strings, got {name!r}")
    if not isinstance(entry, Mapping):
        raise PricingError(f"{path}: {name}: expected {{'input': ..., 'output': ...}} per 1M tokens")
    values = []
    for key in ("input", "output"):
        value = entry.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise PricingError(f"{path}: {name}.{key} = {value!r}: must be a number >= 0 (USD per 1M tokens)")
        values.append(float(value))
    return name, Price(values[0], values[1])


def load_price_table(pricing_json: str | os.PathLike[str] | None = None) -> dict[str, Price]:
    """The built-in table overlaid with ``pricing.json`` when given and present.

    The file maps model names to ``{"input": USD per 1M, "output": USD per 1M}``.
    """
    table = dict(BUILTIN_PRICES)
    if pricing_json is None:
        return table
    path = Path(pricing_json)
    if not path.exists():
        return table
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PricingError(f"{path}: cannot read pricing: {exc}") from exc
    if not isinstance(raw, Mapping):
        raise PricingError(f"{path}: expected a JSON object of model -> prices")
    for name, entry in raw.items():
        key, price = _parse_entry(path, name, entry)
        table[key] = price
    return table


def lookup_price(model: str, table: Mapping[str, Price]) -> Price | None:
    """The price of ``model``; dated snapshots (``gpt-4o-2024-08-06``) fall back to their family."""
    if model.startswith("local:"):
        return Price(0.0, 0.0)
    if model in table:
        return table[model]
    base = model
    for suffix in _SNAPSHOT_SUFFIXES:
        base = base.removesuffix(suffix)
    # Strip a trailing date (-2024-08-06 or -20240620) one dash-part at a time, longest family first.
    parts = base.split("-")
    while len(parts) > 1:
        parts.pop()
        candidate = "-".join(parts)
        if candidate in table and all(p.isdigit() for p in base.split("-")[len(parts):]):
            return table[candidate]
    return table.get(base)


def estimate_cost(model: str, input_tokens: int, output_tokens: int, table: Mapping[str, Price]) -> float | None:
    """USD cost of the given tokens, or ``None`` when the model is not priced ("unknown")."""
    price = lookup_price(model, table)
    if price is None:
        return None
    return (input_tokens * price.input_per_m + output_tokens * price.output_per_m) / 1_000_000
