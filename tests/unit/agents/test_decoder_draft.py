"""Guessed tokens in greedy decoding (prompt lookup): what :func:`draft` guesses, and that a batch decoded
with guesses gives, token for token, what it gives without them, in fewer model calls."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from heidi_engine.agents import decoder
from heidi_engine.agents.decoder import draft


def test_a_draft_continues_the_latest_earlier_occurrence_of_the_last_tokens() -> None:
    #          0  1  2  3  4  5  6  7  8  9
    history = [5, 1, 2, 3, 9, 1, 2, 4, 7, 1, 2]
    # The last two tokens (1, 2) last occurred at 5-6, followed by 4, 7, 1, 2.
    assert draft(history, 3) == [4, 7, 1]
    assert draft(history, 10) == [4, 7, 1, 2]
    # The longest match wins: (9, 1, 2) occurred once, followed by 4.
    assert draft([9, 1, 2, 4, 0, 1, 2, 8, 9, 1, 2], 2) == [4, 0]


def test_no_draft_without_a_repeat_of_at_least_two_tokens() -> None:
    assert draft([1, 2, 3, 4, 5], 4) == []
    assert draft([3, 1, 7, 1], 4) == []  # a single repeated token is too weak a clue
    assert draft([], 4) == [] and draft([1], 4) == []
    assert draft([1, 2, 1, 2], 0) == []


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any]:
    from harness import tiny_llama
    from transformers import AutoTokenizer, LlamaForCausalLM

    from heidi_engine.agents.student import ModelNotAvailable

    try:
        folder: Path = tiny_llama(tmp_path_factory.mktemp("tiny"), max_positions=512)
    except ModelNotAvailable as exc:
        pytest.skip(str(exc))
    return LlamaForCausalLM.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)


def test_guesses_change_no_token_and_save_model_calls(tiny: tuple[Any, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    from transformers import GenerationConfig

    model, tokenizer = tiny
    # A random model repeats itself soon: the guesses come true and the rows take fewer steps.
    prompts = ["def add(a, b):", "Write a function that sorts a list of numbers in place.", "x = 1"]
    config = GenerationConfig(max_new_tokens=96, do_sample=False, pad_token_id=tokenizer.pad_token_id,
                              eos_token_id=tokenizer.eos_token_id)  # fmt: skip
    calls: list[tuple[int, ...]] = []
    forward = model.forward

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(tuple(kwargs["input_ids"].shape))
        return forward(*args, **kwargs)

    monkeypatch.setattr(model, "forward", counted)
    results = {}
    for budget in (1, decoder.STEP_BUDGET):  # a budget of one token per row: no guesses at all
        monkeypatch.setattr(decoder, "STEP_BUDGET", budget)
        calls.clear()
        for batch_size in (1, 3):
            answers = decoder.decode_batch(model, tokenizer, prompts, config, batch_size=batch_size)
            results[budget, batch_size] = ([a.tokens for a in answers], len(calls))
            calls.clear()
    plain = results[1, 1][0]
    assert all(len(tokens) == 96 for tokens in plain)  # a tiny random model never says it is done
    assert results[1, 3][0] == plain
    assert results[decoder.STEP_BUDGET, 1][0] == plain
    assert results[decoder.STEP_BUDGET, 3][0] == plain
    # Without guesses: one call per token (96 a row; 3 rows alone, then together); with them, fewer.
    assert results[1, 1][1] == 3 * 96 and results[1, 3][1] == 96
    assert results[decoder.STEP_BUDGET, 1][1] < 3 * 96 and results[decoder.STEP_BUDGET, 3][1] < 96
