"""Device choice per rank and the 4-bit (QLoRA) refusal on a machine without CUDA."""

from __future__ import annotations

import pytest
import torch

from heidi_engine.agents.student import (
    ModelNotAvailable,
    four_bit_problem,
    load_model_and_tokenizer,
    pick_device_and_dtype,
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
