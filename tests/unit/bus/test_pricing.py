"""Cost estimation: built-in table, pricing.json overlay, unknown models stay unknown."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from heidi_engine.agents.teacher.pricing import (
    BUILTIN_PRICES,
    PricingError,
    estimate_cost,
    load_price_table,
    lookup_price,
)


def test_builtin_covers_seed_era_models() -> None:
    for model in ("gpt-4o", "gpt-4o-mini", "gpt-3.5-turbo", "gpt-4-turbo", "claude-3-5-sonnet", "claude-3-haiku", "claude-3-opus"):
        assert model in BUILTIN_PRICES


def test_estimate_exact() -> None:
    table = load_price_table()
    assert estimate_cost("gpt-4o-mini", 1_000_000, 1_000_000, table) == pytest.approx(0.75)
    assert estimate_cost("gpt-4o", 2000, 500, table) == pytest.approx((2000 * 2.5 + 500 * 10) / 1e6)


def test_dated_snapshot_resolves_to_family() -> None:
    table = load_price_table()
    assert lookup_price("gpt-4o-2024-08-06", table) == BUILTIN_PRICES["gpt-4o"]
    assert lookup_price("claude-3-5-sonnet-20240620", table) == BUILTIN_PRICES["claude-3-5-sonnet"]
    assert lookup_price("gpt-4o-mini-2024-07-18", table) == BUILTIN_PRICES["gpt-4o-mini"]


def test_unknown_model_is_none_not_zero() -> None:
    assert estimate_cost("my-finetune", 10, 10, load_price_table()) is None


def test_local_teacher_costs_nothing() -> None:
    assert estimate_cost("local:smollm2-135m-instruct", 10_000, 10_000, load_price_table()) == 0.0


def test_pricing_json_overlays(tmp_path: Path) -> None:
    path = tmp_path / "pricing.json"
    path.write_text(json.dumps({"my-finetune": {"input": 1.0, "output": 2.0}, "gpt-4o": {"input": 0, "output": 0}}))
    table = load_price_table(path)
    assert estimate_cost("my-finetune", 1_000_000, 500_000, table) == pytest.approx(2.0)
    assert estimate_cost("gpt-4o", 100, 100, table) == 0.0


def test_missing_pricing_json_is_builtin(tmp_path: Path) -> None:
    assert load_price_table(tmp_path / "none.json") == BUILTIN_PRICES


@pytest.mark.parametrize("content,needle", [
    ("{not json", "cannot read"),
    ("[1, 2]", "JSON object"),
    ('{"m": 3}', "expected"),
    ('{"m": {"input": -1, "output": 1}}', "m.input"),
    ('{"m": {"input": "1", "output": 1}}', "m.input"),
    ('{"m": {"input": 1}}', "m.output"),
])
def test_bad_pricing_json(tmp_path: Path, content: str, needle: str) -> None:
    path = tmp_path / "pricing.json"
    path.write_text(content)
    with pytest.raises(PricingError, match=needle):
        load_price_table(path)


def test_cached_input_tokens_are_priced_at_their_rate() -> None:
    table = load_price_table()
    # 1M prompt tokens of which 400k were cached: 600k at $2.50 + 400k at $1.25 per 1M, plus 100k output.
    cost = estimate_cost("gpt-4o", 1_000_000, 100_000, table, cached_input_tokens=400_000)
    assert cost == pytest.approx(0.6 * 2.50 + 0.4 * 1.25 + 0.1 * 10.00)
    # A model without a cached rate charges cached tokens in full.
    assert estimate_cost("gpt-4", 1000, 0, table, cached_input_tokens=1000) == pytest.approx(0.03)


def test_snapshots_priced_apart_from_their_family_and_current_o_series() -> None:
    table = load_price_table()
    assert lookup_price("gpt-4o-2024-05-13", table) == BUILTIN_PRICES["gpt-4o-2024-05-13"] != BUILTIN_PRICES["gpt-4o"]
    assert estimate_cost("o1-mini", 1_000_000, 1_000_000, table) == pytest.approx(1.10 + 4.40)
    assert lookup_price("o3-mini-2025-01-31", table) == BUILTIN_PRICES["o3-mini"]


def test_pricing_json_cached_input_and_unknown_keys(tmp_path: Path) -> None:
    path = tmp_path / "pricing.json"
    path.write_text(json.dumps({"my-model": {"input": 1.0, "output": 2.0, "cached_input": 0.1}}))
    assert estimate_cost("my-model", 1_000_000, 0, load_price_table(path), 1_000_000) == pytest.approx(0.1)
    path.write_text(json.dumps({"my-model": {"input": 1.0, "output": 2.0, "cache": 0.1}}))
    with pytest.raises(PricingError, match="my-model: unknown key"):
        load_price_table(path)
