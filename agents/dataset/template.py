"""The one prompt template shared by training, evaluation and generation.

Training masks the prompt part out of the loss and learns the completion part; evaluation and the
pass@1 generation render exactly the same prompt, so the student is scored on the format it learned.
This module must stay light (no torch import): the validate stage and the menu use it too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

__all__ = ["SYSTEM_PROMPT", "format_prompt", "render_example", "render_prompt"]

SYSTEM_PROMPT = (
    "You are a careful Python programmer. Answer with correct, self-contained code "
    "that follows the instruction exactly."
)


class _ChatTokenizer(Protocol):
    """The slice of a Hugging Face tokenizer the template needs."""

    chat_template: str | None
    eos_token: str | None

    def apply_chat_template(self, conversation: Sequence[dict[str, str]], **kwargs: Any) -> Any: ...


def format_prompt(instruction: str, input_text: str = "") -> list[dict[str, str]]:
    """Chat messages (system + user) for one task; ``input_text`` is appended when non-blank."""
    if not isinstance(instruction, str) or not instruction.strip():
        raise ValueError(f"instruction must be a non-empty string, got {instruction!r:.80}")
    if not isinstance(input_text, str):
        raise ValueError(f"input_text must be a string, got {type(input_text).__name__}")
    user = instruction.strip()
    if input_text.strip():
        user = f"{user}\n\n{input_text.strip()}"
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


def _plain_prompt(messages: Sequence[dict[str, str]]) -> str:
    # For base models without a chat template: an Alpaca-like layout the model can still learn.
    parts = [f"### {m['role'].capitalize()}:\n{m['content']}\n\n" for m in messages]
    return "".join(parts) + "### Assistant:\n"


def render_prompt(tokenizer: _ChatTokenizer, instruction: str, input_text: str = "") -> str:
    """The prompt text up to where the assistant's answer starts.

    Uses the tokenizer's chat template with ``add_generation_prompt=True``; tokenizers without a
    template get a plain ``### Role:`` layout. Tokenize the result with ``add_special_tokens=False``:
    the template already carries whatever special tokens the model expects.
    """
    messages = format_prompt(instruction, input_text)
    if not getattr(tokenizer, "chat_template", None):
        return _plain_prompt(messages)
    rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    if not isinstance(rendered, str):
        raise TypeError(f"apply_chat_template returned {type(rendered).__name__}, expected str")
    return rendered


def render_example(
    tokenizer: _ChatTokenizer, instruction: str, input_text: str, output: str
) -> tuple[str, str]:
    """``(prompt, completion)`` for one training example; the completion ends with the EOS token.

    The EOS token teaches the student to stop; for chat templates such as ChatML it is also the
    end-of-turn marker (``<|im_end|>``), so the completion closes the assistant turn.
    """
    if not isinstance(output, str) or not output.strip():
        raise ValueError(f"output must be a non-empty string, got {output!r:.80}")
    prompt = render_prompt(tokenizer, instruction, input_text)
    eos = getattr(tokenizer, "eos_token", None) or ""
    # Leading spaces are kept: the first line of a code answer may be indented on purpose.
    return prompt, output.lstrip("\n").rstrip() + eos
