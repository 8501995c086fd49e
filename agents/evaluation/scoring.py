"""Scoring the student: completion loss / perplexity and greedy generation with the shared template.

:func:`eval_loss` masks exactly as training does (:func:`heidi_engine.agents.training.lora.build_dataset`), so
validation loss is comparable with the training loss. Use :func:`adapter_disabled` to score the base
model with the same weights in memory.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch

from heidi_engine.agents.dataset.template import render_prompt
from heidi_engine.agents.training.lora import IGNORE_INDEX, PadCollator, build_dataset

__all__ = ["adapter_disabled", "eval_loss", "generate_solution"]


def _device_of(model: Any) -> torch.device:
    return next(model.parameters()).device  # type: ignore[no-any-return]


@contextmanager
def _eval_mode(model: Any) -> Iterator[None]:
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def eval_loss(
    model: Any, tokenizer: Any, rows: Sequence[Mapping[str, str]], seq_len: int, batch_size: int = 4
) -> tuple[float, float]:
    """``(mean loss per completion token, perplexity)`` over ``rows`` (instruction/input/output).

    The mean is over all completion tokens of all rows together, not a mean of per-batch means, so
    it does not depend on ``batch_size``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
    examples = build_dataset(rows, tokenizer, seq_len)
    collate = PadCollator(tokenizer.pad_token_id)
    device = _device_of(model)
    total = torch.zeros((), dtype=torch.float64, device=device)
    count = 0
    with _eval_mode(model), torch.inference_mode():
        for start in range(0, len(examples), batch_size):
            batch = {k: v.to(device) for k, v in collate(examples[start : start + batch_size]).items()}
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            # Position t predicts token t+1.
            targets = batch["labels"][:, 1:]
            losses = torch.nn.functional.cross_entropy(
                logits[:, :-1].float().transpose(1, 2), targets, ignore_index=IGNORE_INDEX, reduction="sum"
            )
            total += losses.double()
            count += int((targets != IGNORE_INDEX).sum())
    if count == 0:
        raise ValueError("no completion tokens to score (all outputs truncated away?)")
    mean = float(total) / count
    return mean, math.exp(min(mean, 700.0))


def generate_solution(
    model: Any, tokenizer: Any, instruction: str, input_text: str = "", max_new_tokens: int = 256
) -> str:
    """The model's greedy answer to one task, rendered with the training template."""
    from transformers import GenerationConfig

    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens!r}")
    prompt = render_prompt(tokenizer, instruction, input_text)
    encoded = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")
    device = _device_of(model)
    # A fresh config: the model's own may carry sampling settings that greedy decoding would ignore.
    config = GenerationConfig.from_dict(
        {
            "max_new_tokens": max_new_tokens,
            "do_sample": False,
            "pad_token_id": tokenizer.pad_token_id,
            "eos_token_id": tokenizer.eos_token_id,
        }
    )
    with _eval_mode(model), torch.inference_mode():
        output = model.generate(
            input_ids=encoded["input_ids"].to(device),
            attention_mask=encoded["attention_mask"].to(device),
            generation_config=config,
        )
    new_tokens = output[0, encoded["input_ids"].shape[1] :]
    # Leading spaces are kept, as in the training template: code may start indented.
    return str(tokenizer.decode(new_tokens, skip_special_tokens=True)).lstrip("\n").rstrip()


@contextmanager
def adapter_disabled(model: Any) -> Iterator[Any]:
    """Within the block, ``model`` behaves as its base model (a PEFT model's adapter is bypassed).

    A model without an adapter is already its base model and is yielded unchanged.
    """
    disable = getattr(model, "disable_adapter", None)
    if disable is None or not hasattr(model, "peft_config"):
        yield model
        return
    with disable():
        yield model
