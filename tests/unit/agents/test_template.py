"""The shared prompt template, against fake tokenizers (no torch, no model files)."""

from __future__ import annotations

import ast
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from heidi_engine.agents.dataset import template as template
from heidi_engine.agents.dataset.template import SYSTEM_PROMPT, format_prompt, render_example, render_prompt


class ChatMLTokenizer:
    """Renders ChatML like SmolLM2's template and records how it was called."""

    chat_template: str | None = "chatml"
    eos_token: str | None = "<|im_end|>"

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def apply_chat_template(self, conversation: Sequence[dict[str, str]], **kwargs: Any) -> Any:
        self.calls.append(kwargs)
        text = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in conversation)
        return text + ("<|im_start|>assistant\n" if kwargs.get("add_generation_prompt") else "")


class PlainTokenizer:
    chat_template: str | None = None
    eos_token: str | None = "</s>"

    def apply_chat_template(self, conversation: Sequence[dict[str, str]], **kwargs: Any) -> Any:
        raise AssertionError("a tokenizer without a template must not be asked to apply one")


def test_format_prompt_joins_instruction_and_input() -> None:
    assert format_prompt("  Add two numbers. ") == [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": "Add two numbers."},
    ]
    assert format_prompt("Add.", "a=1, b=2\n")[1]["content"] == "Add.\n\na=1, b=2"
    assert format_prompt("Add.", "   ")[1]["content"] == "Add."


@pytest.mark.parametrize("bad", ["", "   ", None, 3])
def test_format_prompt_rejects_a_missing_instruction(bad: Any) -> None:
    with pytest.raises(ValueError, match="instruction"):
        format_prompt(bad)


def test_render_prompt_uses_the_chat_template_with_a_generation_prompt() -> None:
    tok = ChatMLTokenizer()
    prompt = render_prompt(tok, "Reverse a string.", "s = 'abc'")
    assert tok.calls == [{"tokenize": False, "add_generation_prompt": True}]
    assert prompt.startswith(f"<|im_start|>system\n{SYSTEM_PROMPT}<|im_end|>\n")
    assert "<|im_start|>user\nReverse a string.\n\ns = 'abc'<|im_end|>\n" in prompt
    assert prompt.endswith("<|im_start|>assistant\n")


def test_render_prompt_falls_back_to_a_plain_layout() -> None:
    prompt = render_prompt(PlainTokenizer(), "Reverse a string.")
    assert prompt == f"### System:\n{SYSTEM_PROMPT}\n\n### User:\nReverse a string.\n\n### Assistant:\n"


@pytest.mark.parametrize("tok", [ChatMLTokenizer(), PlainTokenizer()], ids=["chatml", "plain"])
def test_render_example_is_the_eval_prompt_plus_the_answer_and_eos(tok: Any) -> None:
    prompt, completion = render_example(tok, "Square x.", "", "\n    return x * x\n\n")
    assert prompt == render_prompt(tok, "Square x.")
    assert completion == f"    return x * x{tok.eos_token}"


def test_render_example_without_eos_token_and_with_empty_output() -> None:
    tok = ChatMLTokenizer()
    tok.eos_token = None
    assert render_example(tok, "Square x.", "", "x * x")[1] == "x * x"
    with pytest.raises(ValueError, match="output"):
        render_example(tok, "Square x.", "", "  \n")


def test_template_module_stays_light() -> None:
    tree = ast.parse(Path(template.__file__).read_text(encoding="utf-8"))
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    imported |= {
        node.module.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module
    }
    assert not imported & {"torch", "transformers", "peft"}
