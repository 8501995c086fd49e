"""BusReportingCallback inside a plain HF Trainer script, as an external trainer would use it."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, Trainer, TrainingArguments

from heidi_engine.agents.training.callback import BusReportingCallback, TrainerControl

BATCH, ACCUM = 2, 2


class Recorder:
    """A TrainerControl that records; ``on_park`` runs inside the park at ``pause_at``."""

    def __init__(self, stop_at: int | None = None, pause_at: int | None = None, on_park: Any = None) -> None:
        self.samples: list[dict[str, Any]] = []
        self.checkpoints: list[tuple[int, str]] = []
        self.stop_at, self.pause_at, self.on_park = stop_at, pause_at, on_park

    def publish_step(self, metrics: Mapping[str, float | int | None]) -> None:
        self.samples.append(dict(metrics))

    def should_stop(self) -> bool:
        return self.stop_at is not None and self.samples[-1]["step"] >= self.stop_at

    def wait_if_paused(self) -> None:
        if self.on_park is not None and self.samples[-1]["step"] == self.pause_at:
            self.on_park()

    def on_checkpoint(self, step: int, path: str) -> None:
        self.checkpoints.append((step, path))

    def on_event(self, level: str, message: str) -> None:
        pass


class FakeClock:
    """Advances by ``tick`` on every reading; ``advance`` models time spent elsewhere."""

    def __init__(self, tick: float) -> None:
        self.now, self.tick = 1000.0, tick

    def __call__(self) -> float:
        self.now += self.tick
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def _trainer(tmp_path: Path, callback: BusReportingCallback, steps: int, **args: Any) -> Trainer:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=64,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
    )
    rows = []
    for i in range(12):
        ids = torch.randint(0, 64, (8 + i % 4,)).tolist()
        rows.append({"input_ids": ids, "attention_mask": [1] * len(ids), "labels": ids})

    def collate(batch: list[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        width = max(len(r["input_ids"]) for r in batch)
        out = {}
        for key, pad in (("input_ids", 0), ("attention_mask", 0), ("labels", -100)):
            out[key] = torch.tensor([r[key] + [pad] * (width - len(r[key])) for r in batch])
        return out

    training_args = TrainingArguments(
        output_dir=str(tmp_path / "out"),
        max_steps=steps,
        per_device_train_batch_size=BATCH,
        gradient_accumulation_steps=ACCUM,
        learning_rate=1e-3,
        report_to=[],
        use_cpu=True,
        dataloader_pin_memory=False,
        disable_tqdm=True,
        save_strategy="no",
        **args,
    )
    trainer = Trainer(
        model=LlamaForCausalLM(config),
        args=training_args,
        train_dataset=rows,  # type: ignore[arg-type]
        data_collator=collate,
    )
    # The two lines a user adds to their own script:
    trainer.add_callback(callback)
    return trainer


def test_one_sample_per_optimizer_step_with_loss_and_lr(tmp_path: Path) -> None:
    control = Recorder()
    trainer = _trainer(
        tmp_path, BusReportingCallback(control), steps=5, logging_steps=1, include_num_input_tokens_seen=True
    )
    trainer.train()
    assert [s["step"] for s in control.samples] == [1, 2, 3, 4, 5]
    logged = [e for e in trainer.state.log_history if "loss" in e]
    for sample, entry in zip(control.samples, logged, strict=True):
        assert sample["total"] == 5
        assert sample["loss"] == entry["loss"] and sample["learning_rate"] == entry["learning_rate"]
        assert sample["grad_norm"] == entry["grad_norm"]
        assert sample["tokens_per_s"] > 0 and sample["samples_per_s"] > 0 and sample["eta_s"] >= 0
        # One process: one rank, its peak resident size on CPU (a model and an optimizer: well over 1 MiB).
        assert isinstance(sample["rank_peak_mb"], list) and len(sample["rank_peak_mb"]) == 1
        assert sample["rank_peak_mb"][0] > 1


def test_steps_the_trainer_does_not_log_still_get_one_sample(tmp_path: Path) -> None:
    control = Recorder()
    trainer = _trainer(tmp_path, BusReportingCallback(control), steps=6, logging_steps=3)
    trainer.train()
    assert [s["step"] for s in control.samples] == [1, 2, 3, 4, 5, 6]
    with_loss = [s["step"] for s in control.samples if s["loss"] is not None]
    assert with_loss == [3, 6]
    # Linear decay from 1e-3 over 6 steps, each step reporting the rate it trained with.
    expected = [1e-3 * (1 - k / 6) for k in range(6)]
    assert [s["learning_rate"] for s in control.samples] == pytest.approx(expected, rel=1e-9)
    assert all(s["tokens_per_s"] is None for s in control.samples)  # no token counter in this script


def test_stop_in_a_plain_script_saves_a_checkpoint_at_that_step(tmp_path: Path) -> None:
    control = Recorder(stop_at=2)
    callback = BusReportingCallback(control)
    trainer = _trainer(tmp_path, callback, steps=10, logging_steps=1)
    trainer.train()
    assert trainer.state.global_step == 2 and callback.stop_requested
    assert [s["step"] for s in control.samples] == [1, 2]
    assert control.checkpoints == [(2, str(tmp_path / "out" / "checkpoint-2"))]
    assert (tmp_path / "out" / "checkpoint-2" / "trainer_state.json").is_file()


def test_rates_and_eta_exclude_paused_time(tmp_path: Path) -> None:
    clock = FakeClock(tick=0.25)
    control = Recorder(pause_at=2, on_park=lambda: clock.advance(100.0))
    trainer = _trainer(tmp_path, BusReportingCallback(control, clock=clock), steps=4, logging_steps=1)
    trainer.train()
    # The callback reads the clock once when the step is reported and once after the park: every
    # step measures one tick, including the one after a 100 s pause.
    assert [s["step_time_s"] for s in control.samples] == [0.25] * 4
    assert [s["samples_per_s"] for s in control.samples] == [BATCH * ACCUM / 0.25] * 4
    assert [s["eta_s"] for s in control.samples] == [0.75, 0.5, 0.25, 0.0]


def test_a_control_without_the_protocol_is_rejected() -> None:
    class Half:
        def publish_step(self, metrics: Mapping[str, float | int | None]) -> None:
            pass

    assert isinstance(Recorder(), TrainerControl)
    with pytest.raises(TypeError, match="should_stop"):
        BusReportingCallback(Half())  # type: ignore[arg-type]
