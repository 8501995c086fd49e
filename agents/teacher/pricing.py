"""Teacher cost estimation: a built-in price table merged with a run's ``pricing.json``.

Prices are USD per 1M tokens (input, output, and cached input where the provider discounts prompt
tokens it served from its cache). A model that is not priced has an *unknown* cost
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
    """USD per 1M input and output tokens; cached input tokens cost ``cached_input_per_m`` (None: full)."""

    input_per_m: float
    output_per_m: float
    cached_input_per_m: float | None = None


# Public list prices (USD per 1M tokens: input, output, cached input). A dated snapshot not listed here
# resolves to its family; the ones priced differently from their family are listed.
BUILTIN_PRICES: dict[str, Price] = {
    "gpt-4o": Price(2.50, 10.00, 1.25),
    "gpt-4o-2024-05-13": Price(5.00, 15.00),
    "gpt-4o-mini": Price(0.15, 0.60, 0.075),
    "gpt-4-turbo": Price(10.00, 30.00),
    "gpt-4": Price(30.00, 60.00),
    "gpt-3.5-turbo": Price(0.50, 1.50),
    "gpt-4.1": Price(2.00, 8.00, 0.50),
    "gpt-4.1-mini": Price(0.40, 1.60, 0.10),
    "gpt-4.1-nano": Price(0.10, 0.40, 0.025),
    "o1": Price(15.00, 60.00, 7.50),
    "o1-preview": Price(15.00, 60.00, 7.50),
    "o1-mini": Price(1.10, 4.40, 0.55),
    "o3": Price(2.00, 8.00, 0.50),
    "o3-mini": Price(1.10, 4.40, 0.55),
    "o4-mini": Price(1.10, 4.40, 0.275),
    "claude-3-5-sonnet": Price(3.00, 15.00, 0.30),
    "claude-3-5-haiku": Price(0.80, 4.00, 0.08),
    "claude-3-opus": Price(15.00, 75.00, 1.50),
    "claude-3-sonnet": Price(3.00, 15.00),
    "claude-3-haiku": Price(0.25, 1.25, 0.03),
    "claude-3-7-sonnet": Price(3.00, 15.00, 0.30),
    "claude-sonnet-4": Price(3.00, 15.00, 0.30),
    "claude-opus-4": Price(15.00, 75.00, 1.50),
}

_SNAPSHOT_SUFFIXES = ("-latest",)


class PricingError(ValueError):
    """``pricing.json`` is unreadable or malformed; the message names the file and the entry."""


def _parse_entry(path: Path, name: object, entry: object) -> tuple[str, Price]:
    if not isinstance(name, str) or not name:
        raise PricingError(f"{path}: model names must be non-empty strings, got {name!r}")
    if not isinstance(entry, Mapping):
        raise PricingError(f"{path}: {name}: expected {{'input': ..., 'output': ...}} per 1M tokens")
    values: list[float | None] = []
    for key in ("input", "output", "cached_input"):
        value = entry.get(key)
        if key == "cached_input" and value is None:
            values.append(None)
            continue
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
            or value < 0
        ):
            raise PricingError(f"{path}: {name}.{key} = {value!r}: must be a number >= 0 (USD per 1M tokens)")
        values.append(float(value))
    unknown = sorted(set(entry) - {"input", "output", "cached_input"})
    if unknown:
        raise PricingError(
            f"{path}: {name}: unknown key(s) {', '.join(map(str, unknown))}; expected input, output, cached_input"
        )
    return name, Price(float(values[0] or 0.0), float(values[1] or 0.0), values[2])


def load_price_table(pricing_json: str | os.PathLike[str] | None = None) -> dict[str, Price]:
    """The built-in table overlaid with ``pricing.json`` when given and present.

    The file maps model names to ``{"input": USD per 1M, "output": USD per 1M}``, optionally with
    ``"cached_input"`` (USD per 1M cached prompt tokens; the input price when absent).
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


def price_table(run_dir: Path, home: str | None) -> dict[str, Price]:
    """Built-in prices overlaid with the run's ``pricing.json``, else the home's."""
    candidates = [run_dir / "pricing.json"] + ([Path(home) / "pricing.json"] if home else [])
    chosen = next((path for path in candidates if path.exists()), None)
    return load_price_table(chosen)


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
        if candidate in table and all(p.isdigit() for p in base.split("-")[len(parts) :]):
            return table[candidate]
    return table.get(base)


def estimate_cost(
    model: str,
    input_tokens: int,
    output_tokens: int,
    table: Mapping[str, Price],
    cached_input_tokens: int = 0,
) -> float | None:
    """USD cost of the given tokens, or ``None`` when the model is not priced ("unknown").

    ``cached_input_tokens`` are the part of ``input_tokens`` the provider served from its prompt cache.
    """
    price = lookup_price(model, table)
    if price is None:
        return None
    cached = min(max(cached_input_tokens, 0), input_tokens)
    cached_rate = price.input_per_m if price.cached_input_per_m is None else price.cached_input_per_m
    return (
        (input_tokens - cached) * price.input_per_m
        + cached * cached_rate
        + output_tokens * price.output_per_m
    ) / 1_000_000
