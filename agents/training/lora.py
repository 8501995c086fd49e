"""LoRA fine-tuning of the student with transformers' ``Trainer`` and peft.

Examples are rendered with the shared template (:mod:`heidi_engine.agents.dataset.template`); prompt tokens
and padding are masked out of the loss. :func:`train_lora` reports through a
:class:`~heidi_engine.agents.training.callback.TrainerControl`, checkpoints every ``checkpoint_every`` steps
under ``checkpoint_dir`` (use one folder per round), resumes from the last complete checkpoint there,
and saves the adapter (PEFT format) plus tokenizer to ``out_dir``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from heidi_engine.agents.dataset.template import render_example
from heidi_engine.agents.layout import last_checkpoint
from heidi_engine.agents.student import load_model_and_tokenizer
from heidi_engine.agents.training.callback import BusReportingCallback, NullControl, TrainerControl

__all__ = ["CHECKPOINTING_FROM_PARAMS", "PadCollator", "TrainResult", "TrainSettings", "build_dataset", "train_lora"]

IGNORE_INDEX = -100
_DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")
CHECKPOINTING_FROM_PARAMS = 1_000_000_000


@dataclass(frozen=True)
class TrainSettings:
    """The training knobs of one round (SEQ_LEN, BATCH_SIZE, GRAD_ACCUM, TRAIN_STEPS, LORA_*, ...).

    ``checkpoint_every`` 0 disables periodic checkpoints (a stop still writes one).
    ``target_modules`` None means the attention projections when the model has them, else all linear;
    ``("all-linear",)`` means every linear layer but the output head. ``gradient_checkpointing`` None
    turns it on from :data:`CHECKPOINTING_FROM_PARAMS` parameters. ``load_in_4bit`` trains a QLoRA
    adapter over a 4-bit base (the model must have been loaded that way). ``group_by_length`` batches
    examples of similar length together (the Trainer's length-grouped sampler, seeded), so that less of
    each batch is padding; the prompt masking is unchanged. It is off by default: at the offline
    profile's batch of 2 it did not raise tokens/s (``bench/bench_train_lengths.py``), and it orders each
    group of batches from long to short.
    """

    seq_len: int
    batch_size: int
    grad_accum: int
    train_steps: int
    lora_r: int
    lora_alpha: int
    lora_dropout: float
    learning_rate: float
    seed: int
    checkpoint_every: int
    target_modules: tuple[str, ...] | None = None
    report_to: str = "none"  # the HF Trainer's report_to: "none", "tensorboard", "mlflow" or "wandb"
    gradient_checkpointing: bool | None = None
    load_in_4bit: bool = False
    group_by_length: bool = False

    def __post_init__(self) -> None:
        positive = ("seq_len", "batch_size", "grad_accum", "train_steps", "lora_r", "lora_alpha")
        problems = [
            f"{name} must be >= 1, got {getattr(self, name)!r}"
            for name in positive
            if getattr(self, name) < 1
        ]
        if not 0.0 <= self.lora_dropout < 1.0:
            problems.append(f"lora_dropout must be in [0, 1), got {self.lora_dropout!r}")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            problems.append(f"learning_rate must be a positive number, got {self.learning_rate!r}")
        if self.checkpoint_every < 0:
            problems.append(f"checkpoint_every must be >= 0, got {self.checkpoint_every!r}")
        if self.target_modules is not None and not self.target_modules:
            problems.append("target_modules must be None or non-empty")
        if problems:
            raise ValueError("invalid TrainSettings: " + "; ".join(problems))


@dataclass(frozen=True)
class TrainResult:
    """How a :func:`train_lora` call ended."""

    steps_done: int
    total_steps: int
    stopped_early: bool
    final_loss: float | None
    adapter_dir: Path
    resumed_from_step: int | None


def _row_text(row: Mapping[str, str], index: int, key: str, required: bool) -> str:
    value = row.get(key, None if required else "")
    if value is None:
        raise ValueError(f"train row {index} has no {key!r} field")
    if not isinstance(value, str):
        raise ValueError(f"train row {index} field {key!r} must be a string, got {type(value).__name__}")
    return value


def build_dataset(
    rows: Sequence[Mapping[str, str]], tokenizer: Any, seq_len: int
) -> list[dict[str, list[int]]]:
    """Tokenize ``instruction``/``input``/``output`` rows into unpadded training examples.

    Each example has ``input_ids``, ``attention_mask`` and ``labels`` (-100 on prompt tokens) of at
    most ``seq_len`` tokens. When prompt + completion is too long, the completion keeps at least
    ``min(its length, seq_len // 2)`` tokens and the prompt loses tokens from its start (its end holds
    the assistant header the answer must follow); then the completion is cut at ``seq_len``.
    """
    if seq_len < 2:
        raise ValueError(f"seq_len must be >= 2, got {seq_len!r}")
    if not rows:
        raise ValueError("no training rows")
    examples = []
    for index, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise ValueError(f"train row {index} must be a mapping, got {type(row).__name__}")
        instruction = _row_text(row, index, "instruction", required=True)
        output = _row_text(row, index, "output", required=True)
        input_text = _row_text(row, index, "input", required=False)
        try:
            prompt, completion = render_example(tokenizer, instruction, input_text, output)
        except ValueError as exc:
            raise ValueError(f"train row {index}: {exc}") from None
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        completion_ids = tokenizer(completion, add_special_tokens=False)["input_ids"]
        keep_completion = min(len(completion_ids), seq_len // 2)
        prompt_ids = prompt_ids[-(seq_len - keep_completion) :]
        completion_ids = completion_ids[: seq_len - len(prompt_ids)]
        ids = list(prompt_ids) + list(completion_ids)
        examples.append(
            {
                "input_ids": ids,
                "attention_mask": [1] * len(ids),
                "labels": [IGNORE_INDEX] * len(prompt_ids) + list(completion_ids),
            }
        )
    return examples


class PadCollator:
    """Right-pads a batch of :func:`build_dataset` examples and counts the real tokens it collated.

    Counting here, on the host, gives the tokens/s figure without any device synchronisation.
    """

    def __init__(self, pad_token_id: int) -> None:
        self.pad_token_id = pad_token_id
        self.tokens_seen = 0

    def __call__(self, examples: Sequence[Mapping[str, Sequence[int]]]) -> dict[str, torch.Tensor]:
        width = max(len(e["input_ids"]) for e in examples)
        batch: dict[str, list[list[int]]] = {"input_ids": [], "attention_mask": [], "labels": []}
        for e in examples:
            pad = width - len(e["input_ids"])
            batch["input_ids"].append([*e["input_ids"], *[self.pad_token_id] * pad])
            batch["attention_mask"].append([*e["attention_mask"], *[0] * pad])
            batch["labels"].append([*e["labels"], *[IGNORE_INDEX] * pad])
            self.tokens_seen += sum(e["attention_mask"])
        return {key: torch.tensor(value, dtype=torch.long) for key, value in batch.items()}

    def count(self) -> int:
        """Non-padding tokens collated so far."""
        return self.tokens_seen


def _with_adapter(model: Any, settings: TrainSettings, init_adapter: Path | None) -> Any:
    from peft import LoraConfig, PeftModel, get_peft_model

    if init_adapter is not None:
        if not (Path(init_adapter) / "adapter_config.json").is_file():
            raise FileNotFoundError(f"init_adapter {str(init_adapter)!r} has no adapter_config.json")
        # The previous round's rank and alpha come with its adapter; settings.lora_r/alpha do not apply.
        return _forget_config_less_base(
            PeftModel.from_pretrained(model, str(init_adapter), is_trainable=True)
        )
    targets: list[str] | str
    if settings.target_modules == ("all-linear",):
        targets = "all-linear"
    elif settings.target_modules is not None:
        targets = list(settings.target_modules)
    else:
        leaf_names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
        targets = list(_DEFAULT_TARGETS) if set(_DEFAULT_TARGETS) <= leaf_names else "all-linear"
    config = LoraConfig(
        task_type="CAUSAL_LM",
        r=settings.lora_r,
        lora_alpha=settings.lora_alpha,
        lora_dropout=settings.lora_dropout,
        target_modules=targets,
    )
    return _forget_config_less_base(get_peft_model(model, config))


def _forget_config_less_base(peft_model: Any) -> Any:
    # On every save (checkpoints too) peft compares the vocabulary with base_model_name_or_path's
    # config.json, asking the hub when the folder has none, as with a GGUF base: it warns offline
    # and is a network call online. An empty name skips that check; BASE_MODEL names the base anyway.
    for config in peft_model.peft_config.values():
        base = config.base_model_name_or_path
        if base and Path(base).is_dir() and not (Path(base) / "config.json").is_file():
            config.base_model_name_or_path = ""
    return peft_model


def _use_checkpointing(settings: TrainSettings, model: Any) -> bool:
    if settings.gradient_checkpointing is not None:
        return settings.gradient_checkpointing
    return bool(sum(p.numel() for p in model.parameters()) >= CHECKPOINTING_FROM_PARAMS)


def _training_arguments(settings: TrainSettings, checkpoint_dir: Path, model: Any, checkpointing: bool) -> Any:
    from transformers import TrainingArguments

    param = next(model.parameters())
    on_gpu = param.device.type == "cuda"
    compute_dtype = getattr(model.config, "dtype", None) if settings.load_in_4bit else param.dtype
    # transformers 5 renamed gradient_checkpointing to activation_checkpointing (the old name warns).
    name = "activation_checkpointing"
    if name not in TrainingArguments.__dataclass_fields__:
        name = "gradient_checkpointing"
    checkpointing_args: dict[str, Any] = {name: checkpointing}
    if checkpointing:
        # Non-reentrant: works with frozen inputs (LoRA) without forcing gradients onto the embeddings.
        checkpointing_args[f"{name}_kwargs"] = {"use_reentrant": False}
    return TrainingArguments(
        **checkpointing_args,
        # Every LoRA parameter gets a gradient each step; searching for unused ones costs a graph walk.
        ddp_find_unused_parameters=False,
        # Under a launcher on CPU the ranks talk gloo; set without one, accelerate would expect a group.
        ddp_backend="gloo" if not on_gpu and int(os.environ.get("WORLD_SIZE", "1")) > 1 else None,
        output_dir=str(checkpoint_dir),
        max_steps=settings.train_steps,
        per_device_train_batch_size=settings.batch_size,
        gradient_accumulation_steps=settings.grad_accum,
        learning_rate=settings.learning_rate,
        seed=settings.seed,
        save_strategy="steps" if settings.checkpoint_every > 0 else "no",
        save_steps=settings.checkpoint_every if settings.checkpoint_every > 0 else 500,
        save_total_limit=2,
        logging_strategy="steps",
        logging_steps=1,
        report_to=[] if settings.report_to == "none" else [settings.report_to],
        dataloader_num_workers=0,
        dataloader_pin_memory=on_gpu,
        use_cpu=not on_gpu,
        bf16=on_gpu and compute_dtype == torch.bfloat16,
        fp16=on_gpu and compute_dtype == torch.float16,
        remove_unused_columns=False,
        # Fewer padding tokens per batch; a batch of one has none to save.
        train_sampling_strategy="group_by_length" if settings.group_by_length and settings.batch_size > 1 else "random",
        label_names=["labels"],
        disable_tqdm=True,
    )


def _final_loss(log_history: Sequence[Mapping[str, Any]]) -> float | None:
    for entry in reversed(log_history):
        if "loss" in entry:
            return float(entry["loss"])
    return None


def train_lora(
    *,
    model_name: str,
    train_rows: Sequence[Mapping[str, str]],
    out_dir: Path,
    checkpoint_dir: Path,
    settings: TrainSettings,
    control: TrainerControl | None = None,
    init_adapter: Path | None = None,
    resume: bool = True,
    model_and_tokenizer: tuple[Any, Any] | None = None,
) -> TrainResult:
    """Train a LoRA adapter on ``train_rows`` and save it (plus the tokenizer) to ``out_dir``.

    ``init_adapter`` continues the previous round's adapter; ``resume`` restarts from the last
    complete checkpoint in ``checkpoint_dir`` with the same step counter (with ``resume=False`` a
    folder that already holds checkpoints is refused with ``FileExistsError``). ``model_and_tokenizer``
    skips loading ``model_name``; its model gets the LoRA layers injected in place.
    Returns when training reaches ``settings.train_steps`` or a stop request (the adapter is saved
    either way).
    """
    from transformers import PrinterCallback, ProgressCallback, Trainer, set_seed

    control = control if control is not None else NullControl()
    out_dir, checkpoint_dir = Path(out_dir), Path(checkpoint_dir)
    checkpoint = last_checkpoint(checkpoint_dir)
    if checkpoint is not None and not resume:
        # Stale checkpoints would be mixed with the new ones by rotation and by a later resume.
        raise FileExistsError(
            f"{checkpoint_dir} already holds checkpoints (last: step {checkpoint[1]}); "
            "pass resume=True to continue from them, or use an empty checkpoint folder"
        )
    if model_and_tokenizer is None:
        model, tokenizer = load_model_and_tokenizer(
            model_name, for_training=True, load_in_4bit=settings.load_in_4bit
        )
    else:
        model, tokenizer = model_and_tokenizer
    dataset = build_dataset(train_rows, tokenizer, settings.seq_len)
    checkpointing = _use_checkpointing(settings, model)
    if settings.load_in_4bit:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(  # type: ignore[no-untyped-call]
            model,
            use_gradient_checkpointing=checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False},
        )
    set_seed(settings.seed)  # the LoRA A matrices are initialised at random
    model = _with_adapter(model, settings, init_adapter)

    resumed_from = checkpoint[1] if checkpoint is not None else None
    if checkpoint is not None:
        control.on_event("info", f"resuming training from checkpoint step {checkpoint[1]} ({checkpoint[0]})")

    collator = PadCollator(tokenizer.pad_token_id)
    callback = BusReportingCallback(control, tokens_seen=collator.count)
    trainer = Trainer(
        model=model,
        args=_training_arguments(settings, checkpoint_dir, model, checkpointing),
        train_dataset=dataset,  # a list is a valid map-style dataset
        data_collator=collator,
        processing_class=tokenizer,
        callbacks=[callback],
    )
    # The callback reports progress; the Trainer's own printers would only clutter the agent's stderr.
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    trainer.train(resume_from_checkpoint=str(checkpoint[0]) if checkpoint is not None else None)

    if trainer.is_world_process_zero():
        # Under torchrun every rank holds the same adapter: one writer.
        out_dir.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(str(out_dir))  # the PeftModel: writes the adapter only
        tokenizer.save_pretrained(str(out_dir))
    steps_done = trainer.state.global_step
    stopped = callback.stop_requested
    where = f"adapter saved to {out_dir} at step {steps_done}/{settings.train_steps}"
    control.on_event("info", f"stop requested: {where}" if stopped else where)
    return TrainResult(
        steps_done=steps_done,
        total_steps=settings.train_steps,
        stopped_early=stopped,
        final_loss=_final_loss(trainer.state.log_history),
        adapter_dir=out_dir,
        resumed_from_step=resumed_from,
    )
