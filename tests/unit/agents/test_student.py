"""Device choice per rank, the 4-bit (QLoRA) refusal on a machine without CUDA, and preparing the model once."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from heidi_engine.agents import student
from heidi_engine.agents.student import (
    ModelNotAvailable,
    four_bit_problem,
    load_model_and_tokenizer,
    pick_device_and_dtype,
    prepare_model,
)

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA path")


@no_cuda
def test_without_cuda_every_rank_trains_on_the_cpu_in_float32() -> None:
    assert pick_device_and_dtype({"LOCAL_RANK": "1"}) == ("cpu", torch.float32)
    assert pick_device_and_dtype({}) == ("cpu", torch.float32)


@no_cuda
def test_four_bit_without_cuda_names_what_is_missing_and_the_fix() -> None:
    problem = four_bit_problem()
    assert problem is not None
    assert problem.startswith('LOAD_IN_4BIT "1" (QLoRA) needs a CUDA GPU')
    assert problem.endswith('set LOAD_IN_4BIT to "0"')
    # Refused before any model is looked for or loaded.
    with pytest.raises(ModelNotAvailable) as info:
        load_model_and_tokenizer("/no/such/model", load_in_4bit=True)
    assert str(info.value) == problem


def _no_load(name: str, **_kwargs: Any) -> Any:
    raise AssertionError(f"{name} was loaded")


def test_prepare_model_loads_a_gguf_model_only_while_it_has_no_dense_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUTOTRAIN_MODEL_CACHE", str(tmp_path))
    loads: list[str] = []

    def fake_load(name: str, **_kwargs: Any) -> Any:
        loads.append(name)
        folder = student._dense_cache(student.resolve_model(name))
        assert folder is not None
        folder.mkdir(parents=True)
        (folder / "config.json").write_text("{}")

    monkeypatch.setattr(student, "load_model_and_tokenizer", fake_load)
    first = prepare_model("smollm2-135m-instruct")
    assert first is not None and first.parent == tmp_path and loads == ["smollm2-135m-instruct"]
    monkeypatch.setattr(student, "load_model_and_tokenizer", _no_load)
    assert prepare_model("smollm2-135m-instruct") == first  # the copy is there: nothing loaded


def test_prepare_model_has_nothing_to_do_for_a_hub_model_or_with_the_cache_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(student, "load_model_and_tokenizer", _no_load)
    assert prepare_model("HuggingFaceTB/SmolLM2-135M-Instruct") is None
    monkeypatch.setenv("AUTOTRAIN_MODEL_CACHE", "")
    assert prepare_model("smollm2-135m-instruct") is None


def test_prepare_model_from_the_command_line_names_a_missing_model() -> None:
    result = subprocess.run([sys.executable, "-m", "heidi_engine.agents.student", "/no/such/model"],
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.strip() == "error: model path '/no/such/model' does not exist"
