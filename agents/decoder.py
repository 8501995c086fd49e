"""Batched generation with a causal LM in this process: several prompts in one ``generate`` call.

The in-process teacher and the eval stage both decode here. A batch is left-padded (the new tokens of
every row then start at the same column, and the KV cache serves the whole batch) with an attention
mask, and each row's position ids count its own tokens only, so a padded row sees exactly the positions
it would see alone. Greedy decoding runs its own loop over the model with a KV cache, and a row that
ends leaves the batch and the cache at once: rows of very different lengths cost what they would cost
alone, not all of them what the longest one costs. Sampling goes through ``generate``. Prompts are grouped by length before batching, so that little of a
batch is padding, and the answers come back in the order asked.

With a PEFT model, each prompt may name the adapter that answers it (``"__base__"`` for the base model):
the base and an adapter then answer in the same batch, one pass over the shared weights per token
instead of one per variant (PEFT's mixed-adapter batches). On a CPU, where a step costs about the same
for one row as for sixteen, that halves the time of scoring both.

A row may end early on a :data:`StopRule`: a test on its decoded continuation. Decoding a whole
continuation at every new token costs O(n^2) per row, so the rule is asked only when the new token's
text holds one of the rule's trigger characters (a closing code fence cannot appear without a backtick,
a finished line without a newline): it stops a row at exactly the token at which asking it after every
token would have stopped it, at a fraction of the cost. Where each row ended is recorded as it happens,
so trailing padding is never mistaken for output, whatever the pad token is.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["BASE", "Decoded", "StopRule", "decode_batch", "length_order"]

BASE = "__base__"  # PEFT's name for "no adapter" in a mixed-adapter batch

# ``(continuation text) -> whether the row is finished``, with the characters whose appearance in a new
# token's text can change its answer from no to yes.
StopRule = tuple[Callable[[str], bool], str]

_TRIGGERS: dict[tuple[int, str], Any] = {}


@dataclass(frozen=True)
class Decoded:
    """One row's result: its new tokens (the end-of-sequence token included when it ended on it)."""

    tokens: tuple[int, ...]
    text: str
    ended: bool  # on the end-of-sequence token or on its stop rule, not on the token limit


def length_order(lengths: Sequence[int]) -> list[int]:
    """The indices of ``lengths``, longest first (ties in the order given): the order to batch them in."""
    return sorted(range(len(lengths)), key=lambda index: -lengths[index])


def _trigger_ids(tokenizer: Any, characters: str) -> Any:
    """A boolean tensor over the vocabulary: which tokens' text holds one of ``characters``."""
    import torch

    key = (id(tokenizer), characters)
    if key not in _TRIGGERS:
        size = len(tokenizer)
        texts = tokenizer.batch_decode([[index] for index in range(size)], skip_special_tokens=False)
        _TRIGGERS[key] = torch.tensor(
            [any(ch in text for ch in characters) for text in texts], dtype=torch.bool
        )
    return _TRIGGERS[key]


def _criteria(
    tokenizer: Any, start: int, rows: int, eos: set[int], stop: StopRule | None
) -> tuple[Any, list[int | None]]:
    """The stopping criterion of one ``generate`` call, and the list where it records each row's end."""
    import torch
    from transformers import StoppingCriteria

    ends: list[int | None] = [None] * rows
    triggers = _trigger_ids(tokenizer, stop[1]) if stop is not None else None

    class RowEnd(StoppingCriteria):  # type: ignore[misc]
        def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
            length = int(input_ids.shape[1])
            last = input_ids[:, -1].cpu()
            asked = triggers[last.clamp(max=len(triggers) - 1)] if triggers is not None else None
            for row in range(rows):
                if ends[row] is not None:
                    continue
                if int(last[row]) in eos:
                    ends[row] = length
                elif asked is not None and stop is not None and bool(asked[row]):
                    text = tokenizer.decode(input_ids[row, start:], skip_special_tokens=True)
                    if stop[0](text):
                        ends[row] = length
            done = [end is not None for end in ends]
            return torch.tensor(done, dtype=torch.bool, device=input_ids.device)

    return RowEnd(), ends


def _eos_ids(tokenizer: Any, config: Any) -> set[int]:
    found = config.eos_token_id if config.eos_token_id is not None else tokenizer.eos_token_id
    if found is None:
        return set()
    return {int(found)} if isinstance(found, int) else {int(token) for token in found}


# Tokens a greedy step may carry over all its rows, guesses included: a step reads every weight once
# however many tokens it carries, so while few rows are left a few guesses per row cost little. Measured
# on a 2-core CPU with SmolLM2-135M (bench/bench_eval.py's answers): 8 tokens in one row's step cost
# ~1.5x one token; the batch's decoding took 37-39 s CPU without guesses, 25-26 s with 8, 22-25 s with 16.
STEP_BUDGET = 16
MAX_DRAFT = 10


def draft(history: Sequence[int], size: int, longest: int = 3, shortest: int = 2) -> list[int]:
    """Up to ``size`` tokens guessed to come next: those that followed the latest earlier occurrence of
    the sequence's last ``n`` tokens, ``n`` from ``longest`` down to ``shortest`` (prompt lookup). Small
    models repeat themselves and their prompts (a signature, a loop of near-identical definitions),
    which is where most guesses come true; a wrong guess only costs its slot in the step."""
    for n in range(min(longest, len(history) - 1), shortest - 1, -1):
        tail = list(history[-n:])
        for at in range(len(history) - n - 1, -1, -1):
            if history[at] == tail[0] and list(history[at : at + n]) == tail:
                return list(history[at + n : at + n + size])
    return []


def _greedy(
    model: Any,
    tokenizer: Any,
    encoded: Any,
    config: Any,
    eos: set[int],
    stop: StopRule | None,
    adapters: Sequence[str] | None,
) -> list[Decoded]:
    """Greedy decoding of a left-padded batch with a KV cache, dropping each row from the batch (and its
    cache) as soon as it ends: a batch costs what its unfinished rows cost, not what its longest row does.

    While few rows are left, each step also verifies a few guessed tokens per row (:func:`draft`): the
    step's logits give the greedy token after each guess, a row keeps its guesses up to the first one
    that is not what greedy decoding chose, and the cache entries of the rest are masked out for good.
    Every token kept is the greedy choice given the tokens before it, so the answers are those of one
    token per step; a repetitive answer just takes fewer steps.
    """
    import torch
    from transformers import DynamicCache

    device = next(model.parameters()).device
    ids = encoded["input_ids"].to(device)
    mask = encoded["attention_mask"].to(device)
    rows = int(ids.shape[0])
    limit = int(config.max_new_tokens)
    pad = int(config.pad_token_id)
    triggers = _trigger_ids(tokenizer, stop[1]) if stop is not None else None
    history = [[int(t) for t, kept in zip(ids[row], mask[row], strict=True) if kept] for row in range(rows)]
    tokens: list[list[int]] = [[] for _ in range(rows)]
    ended = [False] * rows
    active = list(range(rows))
    cache = DynamicCache(config=model.config)
    # Each row's positions count its own tokens only: a padded row sees what it would see alone.
    positions = (mask.long().cumsum(-1) - 1).clamp(min=0)
    step_ids, step_positions = ids, positions
    # The position of each row's first input of the step (for the prompt, its last token's): the row's
    # next token goes that many positions further as it kept tokens.
    following = positions[:, -1]
    drafts: list[list[int]] = [[] for _ in active]
    with torch.inference_mode():
        while active:
            width = 1 + max(map(len, drafts))
            mixed = {} if adapters is None else {"adapter_names": [adapters[row] for row in active]}
            out = model(
                input_ids=step_ids,
                attention_mask=mask,
                position_ids=step_positions,
                cache=cache,
                use_cache=True,
                logits_to_keep=width,
                **mixed,
            )
            chosen = out.logits[:, -width:, :].to(dtype=torch.float32).argmax(dim=-1).tolist()
            kept_counts: list[int] = []
            keep: list[int] = []
            for slot, row in enumerate(active):
                guesses = drafts[slot]
                kept = 0
                for column, token in enumerate(chosen[slot]):
                    kept += 1
                    tokens[row].append(token)
                    history[row].append(token)
                    if token in eos:
                        ended[row] = True
                    elif triggers is not None and stop is not None and bool(triggers[min(token, len(triggers) - 1)]):
                        ended[row] = bool(stop[0](tokenizer.decode(tokens[row], skip_special_tokens=True)))
                    if ended[row] or len(tokens[row]) >= limit:
                        break
                    if column >= len(guesses) or guesses[column] != token:
                        break  # the next column's prediction followed a wrong guess
                kept_counts.append(kept)
                if not ended[row] and len(tokens[row]) < limit:
                    keep.append(slot)
            if width > 1:
                # Entries of the guesses that were not kept stay in the cache, masked out for good.
                block = torch.tensor(
                    [[1] * kept + [0] * (width - kept) for kept in kept_counts], dtype=mask.dtype, device=device
                )
                mask[:, -width:] = block
            following = following + torch.tensor(kept_counts, device=device)
            if not keep:
                break
            if len(keep) < len(active):
                index = torch.tensor(keep, device=device)
                cache.batch_select_indices(index)
                mask, following = mask[index], following[index]
                active = [active[slot] for slot in keep]
            size = min(MAX_DRAFT, STEP_BUDGET // len(active) - 1)
            drafts = [
                draft(history[row], min(size, limit - len(tokens[row]) - 1)) if size > 0 else [] for row in active
            ]
            width = 1 + max(map(len, drafts))
            step_ids = torch.tensor(
                [[history[row][-1], *guess, *[pad] * (width - 1 - len(guess))] for row, guess in zip(active, drafts, strict=True)],
                dtype=ids.dtype,
                device=device,
            )
            new = torch.tensor(
                [[1] * (1 + len(guess)) + [0] * (width - 1 - len(guess)) for guess in drafts], dtype=mask.dtype, device=device
            )
            mask = torch.cat([mask, new], dim=-1)
            step_positions = following[:, None] + torch.arange(width, device=device)[None, :]
    return [
        Decoded(tuple(row), str(tokenizer.decode(row, skip_special_tokens=True)), done)
        for row, done in zip(tokens, ended, strict=True)
    ]


def _one_batch(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    config: Any,
    stop: StopRule | None,
    adapters: Sequence[str] | None,
) -> list[Decoded]:
    import torch
    from transformers import StoppingCriteriaList

    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        encoded = tokenizer(list(prompts), add_special_tokens=False, padding=True, return_tensors="pt")
    finally:
        tokenizer.padding_side = side
    if not config.do_sample:
        return _greedy(model, tokenizer, encoded, config, _eos_ids(tokenizer, config), stop, adapters)
    start = int(encoded["input_ids"].shape[1])
    criterion, ends = _criteria(tokenizer, start, len(prompts), _eos_ids(tokenizer, config), stop)
    device = next(model.parameters()).device
    with torch.inference_mode():
        output = model.generate(
            input_ids=encoded["input_ids"].to(device),
            attention_mask=encoded["attention_mask"].to(device),
            generation_config=config,
            stopping_criteria=StoppingCriteriaList([criterion]),
            **({} if adapters is None else {"adapter_names": list(adapters)}),
        )
    results = []
    for row, end in enumerate(ends):
        tokens = output[row, start : end if end is not None else output.shape[1]]
        text = str(tokenizer.decode(tokens, skip_special_tokens=True))
        results.append(Decoded(tuple(int(t) for t in tokens), text, end is not None))
    return results


def decode_batch(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    generation_config: Any,
    *,
    batch_size: int,
    stop: StopRule | None = None,
    before: Callable[[], None] | None = None,
    adapters: Sequence[str] | None = None,
) -> list[Decoded]:
    """Generate a continuation of every prompt, ``batch_size`` prompts per ``generate`` call.

    ``generation_config`` is a transformers ``GenerationConfig`` (its ``pad_token_id`` must be set);
    ``stop`` ends a row early (see the module docstring); ``before`` is called before each batch (a
    pause/stop boundary); ``adapters``, with a PEFT model, names each prompt's adapter (:data:`BASE` for
    none). The results are in the order of ``prompts``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
    if adapters is not None and len(adapters) != len(prompts):
        raise ValueError(f"{len(adapters)} adapter names for {len(prompts)} prompts")
    if generation_config.pad_token_id is None:
        raise ValueError("generation_config.pad_token_id is not set: batched generation pads its prompts")
    lengths = [len(tokenizer(prompt, add_special_tokens=False)["input_ids"]) for prompt in prompts]
    order = length_order(lengths)
    results: list[Decoded | None] = [None] * len(prompts)
    for first in range(0, len(order), batch_size):
        if before is not None:
            before()
        chunk = order[first : first + batch_size]
        names = None if adapters is None else [adapters[i] for i in chunk]
        decoded = _one_batch(model, tokenizer, [prompts[i] for i in chunk], generation_config, stop, names)
        for index, answer in zip(chunk, decoded, strict=True):
            results[index] = answer
    return [answer for answer in results if answer is not None]
