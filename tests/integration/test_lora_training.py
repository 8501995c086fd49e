"""LoRA training end to end on a tiny Llama with the real SmolLM2 tokenizer: save/reload, pause,
stop, and resume after a kill -9.

Run as a script (``python test_lora_training.py worker ...``) this file is also the training
subprocess that the resume test kills.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import torch

from heidi_engine.agents.evaluation.scoring import adapter_disabled, eval_loss
from heidi_engine.agents.student import ModelNotAvailable, load_model_and_tokenizer
from heidi_engine.agents.training.lora import IGNORE_INDEX, TrainSettings, build_dataset, train_lora

# peft 0.21 still reads transformers' deprecated alias when it wraps a model.
pytestmark = [pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")]

ROWS = [
    {
        "instruction": f"Write a Python function f{i}(x) that returns x plus {i}.",
        "input": "Use a single return statement." if i % 2 else "",
        "output": f"def f{i}(x):\n    return x + {i}\n",
    }
    for i in range(8)
]


def _settings(**overrides: Any) -> TrainSettings:
    base: dict[str, Any] = {
        "seq_len": 96,
        "batch_size": 2,
        "grad_accum": 2,
        "train_steps": 4,
        "lora_r": 4,
        "lora_alpha": 8,
        "lora_dropout": 0.1,
        "learning_rate": 5e-3,
        "seed": 7,
        "checkpoint_every": 0,
    }
    base.update(overrides)
    return TrainSettings(**base)


class FakeControl:
    """Records what the trainer reports; pauses at ``pause_at`` and stops from ``stop_at`` on."""

    def __init__(self, pause_at: int | None = None, stop_at: int | None = None) -> None:
        self.samples: list[dict[str, Any]] = []
        self.checkpoints: list[tuple[int, str]] = []
        self.events: list[tuple[str, str]] = []
        self.pause_at = pause_at
        self.stop_at = stop_at
        self.parked = threading.Event()
        self.release = threading.Event()

    def publish_step(self, metrics: Mapping[str, float | int | None]) -> None:
        self.samples.append(dict(metrics))

    def should_stop(self) -> bool:
        return self.stop_at is not None and self.samples[-1]["step"] >= self.stop_at

    def wait_if_paused(self) -> None:
        if self.pause_at is not None and self.samples[-1]["step"] == self.pause_at:
            self.parked.set()
            if not self.release.wait(timeout=120):
                raise AssertionError("pause was never released")

    def on_checkpoint(self, step: int, path: str) -> None:
        self.checkpoints.append((step, path))

    def on_event(self, level: str, message: str) -> None:
        self.events.append((level, message))

    def steps(self) -> list[int]:
        return [s["step"] for s in self.samples]


class _KilledAfterCheckpoint(FakeControl):
    """The subprocess side of the resume test: logs samples to a file, hangs once ``hang_at`` is saved."""

    def __init__(self, samples_file: Path, marker: Path, hang_at: int) -> None:
        super().__init__()
        self.samples_file, self.marker, self.hang_at = samples_file, marker, hang_at

    def publish_step(self, metrics: Mapping[str, float | int | None]) -> None:
        with self.samples_file.open("a", encoding="utf-8") as f:
            f.write(json.dumps(dict(metrics)) + "\n")

    def should_stop(self) -> bool:
        return False

    def on_checkpoint(self, step: int, path: str) -> None:
        if step == self.hang_at:
            self.marker.write_text(path, encoding="utf-8")
            threading.Event().wait()  # wait here for the kill -9


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Llama saved with the real SmolLM2 tokenizer: a local model folder."""
    # Imported here: this file also runs as a training subprocess, without tests/ on its path.
    from harness import tiny_llama

    try:
        return tiny_llama(tmp_path_factory.mktemp("tiny-llama"), max_positions=256)
    except ModelNotAvailable as exc:
        pytest.skip(str(exc))


def _fresh(base_dir: Path) -> tuple[Any, Any]:
    return load_model_and_tokenizer(str(base_dir), device="cpu", dtype="float32", for_training=True)


def test_build_dataset_masks_the_prompt_and_truncates(base_dir: Path) -> None:
    _, tokenizer = _fresh(base_dir)
    [example] = build_dataset(ROWS[:1], tokenizer, seq_len=256)
    labels, ids = example["labels"], example["input_ids"]
    n_prompt = labels.count(IGNORE_INDEX)
    assert labels[:n_prompt] == [IGNORE_INDEX] * n_prompt and IGNORE_INDEX not in labels[n_prompt:]
    assert labels[n_prompt:] == ids[n_prompt:]
    assert tokenizer.decode(ids[n_prompt:]) == ROWS[0]["output"].rstrip() + tokenizer.eos_token
    assert "assistant" in tokenizer.decode(ids[:n_prompt]).splitlines()[-1]

    long_prompt = {**ROWS[0], "input": "context " * 200}
    [cut] = build_dataset([long_prompt], tokenizer, seq_len=32)
    assert len(cut["input_ids"]) == 32
    kept = [t for t in cut["labels"] if t != IGNORE_INDEX]
    assert kept == example["labels"][n_prompt:][: len(kept)] and len(kept) == min(len(ids) - n_prompt, 16)

    with pytest.raises(ValueError, match="row 1 has no 'output'"):
        build_dataset([ROWS[0], {"instruction": "x"}], tokenizer, seq_len=64)


def test_eval_loss_does_not_depend_on_padding(base_dir: Path) -> None:
    model, tokenizer = _fresh(base_dir)
    one = eval_loss(model, tokenizer, ROWS, seq_len=96, batch_size=1)
    three = eval_loss(model, tokenizer, ROWS, seq_len=96, batch_size=3)
    assert math.isfinite(one[0]) and one[1] == pytest.approx(math.exp(one[0]))
    # A random model over a 49k vocabulary scores close to uniform: loss ≈ ln(49152) ≈ 10.8.
    assert 9.0 < one[0] < 12.0
    assert three[0] == pytest.approx(one[0], abs=1e-5)


def test_trained_adapter_reloads_with_identical_logits(base_dir: Path, tmp_path: Path) -> None:
    from peft import PeftModel

    model, tokenizer = _fresh(base_dir)
    control = FakeControl()
    result = train_lora(
        model_name="unused",
        train_rows=ROWS,
        out_dir=tmp_path / "out_lora_round_1",
        checkpoint_dir=tmp_path / "checkpoints",
        settings=_settings(train_steps=3),
        control=control,
        model_and_tokenizer=(model, tokenizer),
    )
    assert (result.steps_done, result.total_steps, result.stopped_early) == (3, 3, False)
    assert control.steps() == [1, 2, 3]
    for sample in control.samples:
        assert sample["total"] == 3 and math.isfinite(sample["loss"]) and sample["learning_rate"] > 0
        assert sample["grad_norm"] > 0 and sample["tokens_per_s"] > 0 and sample["samples_per_s"] > 0
        assert sample["gpu_mem_mb"] is None  # CPU run
    assert control.samples[-1]["eta_s"] == 0
    assert result.final_loss == pytest.approx(control.samples[-1]["loss"])
    assert (result.adapter_dir / "adapter_config.json").is_file()
    assert (result.adapter_dir / "tokenizer_config.json").is_file()
    assert any(str(result.adapter_dir) in message for _, message in control.events)

    probe = torch.tensor([tokenizer("def f(x): return x", add_special_tokens=False)["input_ids"]])
    model.eval()
    with torch.no_grad():
        trained = model(probe).logits
    reloaded = PeftModel.from_pretrained(_fresh(base_dir)[0], str(result.adapter_dir)).eval()
    with torch.no_grad():
        again = reloaded(probe).logits
        with adapter_disabled(reloaded):
            base = reloaded(probe).logits
    assert torch.allclose(trained, again, atol=1e-6)
    assert not torch.allclose(trained, base, atol=1e-4), "training left the adapter at zero"
    with_adapter, _ = eval_loss(reloaded, tokenizer, ROWS, seq_len=96)
    with adapter_disabled(reloaded):
        without, _ = eval_loss(reloaded, tokenizer, ROWS, seq_len=96)
    assert with_adapter < without  # the adapter learned its own training rows


def test_next_round_continues_from_the_previous_adapter(base_dir: Path, tmp_path: Path) -> None:
    from peft import PeftModel

    first = train_lora(
        model_name=str(base_dir),
        train_rows=ROWS,
        out_dir=tmp_path / "out_lora_round_1",
        checkpoint_dir=tmp_path / "ckpt1",
        settings=_settings(train_steps=2),
    )
    model, tokenizer = _fresh(base_dir)
    second = train_lora(
        model_name="unused",
        train_rows=ROWS,
        out_dir=tmp_path / "out_lora_round_2",
        checkpoint_dir=tmp_path / "ckpt2",
        # A negligible rate: round 2 must end where round 1 left off, not at a fresh (zero) adapter.
        settings=_settings(train_steps=1, learning_rate=1e-12, lora_r=2),
        init_adapter=first.adapter_dir,
        model_and_tokenizer=(model, tokenizer),
    )
    assert second.steps_done == 1
    probe = torch.tensor([tokenizer("def g(y): return y", add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        round_1 = PeftModel.from_pretrained(_fresh(base_dir)[0], str(first.adapter_dir)).eval()(probe).logits
        round_2 = PeftModel.from_pretrained(_fresh(base_dir)[0], str(second.adapter_dir)).eval()
        with adapter_disabled(round_2):
            base = round_2(probe).logits
        continued = round_2(probe).logits
    assert torch.allclose(continued, round_1, atol=1e-5)
    assert not torch.allclose(continued, base, atol=1e-4)
    assert json.loads((second.adapter_dir / "adapter_config.json").read_text(encoding="utf-8"))["r"] == 4

    with pytest.raises(FileNotFoundError, match=r"no adapter_config\.json"):
        train_lora(
            model_name=str(base_dir),
            train_rows=ROWS,
            out_dir=tmp_path / "x",
            checkpoint_dir=tmp_path / "ckpt3",
            settings=_settings(),
            init_adapter=tmp_path,
        )


def test_bad_settings_and_stale_checkpoints_are_refused(base_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"batch_size must be >= 1, got 0; lora_dropout must be in \[0, 1\)"):
        _settings(batch_size=0, lora_dropout=1.5)
    stop_at_1 = FakeControl(stop_at=1)
    train_lora(
        model_name=str(base_dir),
        train_rows=ROWS,
        out_dir=tmp_path / "out",
        checkpoint_dir=tmp_path / "ckpt",
        settings=_settings(),
        control=stop_at_1,
    )
    with pytest.raises(FileExistsError, match=r"already holds checkpoints .*step 1.*resume=True"):
        train_lora(
            model_name=str(base_dir),
            train_rows=ROWS,
            out_dir=tmp_path / "out",
            checkpoint_dir=tmp_path / "ckpt",
            settings=_settings(),
            resume=False,
        )


def test_pause_parks_at_a_step_boundary_and_resumes_exactly(base_dir: Path, tmp_path: Path) -> None:
    def run(control: FakeControl, name: str) -> Any:
        return train_lora(
            model_name="unused",
            train_rows=ROWS,
            out_dir=tmp_path / name / "out",
            checkpoint_dir=tmp_path / name / "ckpt",
            settings=_settings(),
            control=control,
            model_and_tokenizer=_fresh(base_dir),
        )

    straight = FakeControl()
    run(straight, "straight")

    paused = FakeControl(pause_at=2)
    seen_at_park: list[list[int]] = []

    def releaser() -> None:
        if paused.parked.wait(timeout=120):
            seen_at_park.append(paused.steps())
        paused.release.set()

    thread = threading.Thread(target=releaser)
    thread.start()
    try:
        result = run(paused, "paused")
    finally:
        paused.release.set()
        thread.join(timeout=30)
    assert seen_at_park == [[1, 2]]
    assert result.steps_done == 4 and not result.stopped_early
    assert paused.steps() == straight.steps() == [1, 2, 3, 4]
    for a, b in zip(paused.samples, straight.samples, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-5)


def test_stop_saves_a_loadable_adapter_at_the_step_boundary(base_dir: Path, tmp_path: Path) -> None:
    from peft import PeftModel

    control = FakeControl(stop_at=2)
    result = train_lora(
        model_name="unused",
        train_rows=ROWS,
        out_dir=tmp_path / "out",
        checkpoint_dir=tmp_path / "ckpt",
        settings=_settings(train_steps=6),
        control=control,
        model_and_tokenizer=_fresh(base_dir),
    )
    assert result.stopped_early and result.steps_done == 2 and result.total_steps == 6
    assert control.steps() == [1, 2]
    assert [step for step, _ in control.checkpoints] == [2]  # a stop leaves a resumable checkpoint
    assert Path(control.checkpoints[0][1]).is_dir()
    assert any("stop" in m and "step 2/6" in m and str(tmp_path / "out") in m for _, m in control.events)
    reloaded = PeftModel.from_pretrained(_fresh(base_dir)[0], str(result.adapter_dir))
    loss, _ = eval_loss(reloaded, _fresh(base_dir)[1], ROWS[:2], seq_len=96)
    assert math.isfinite(loss)


def _wait_for(path: Path, proc: subprocess.Popen[bytes], deadline_s: float, log: Path) -> None:
    deadline = time.monotonic() + deadline_s
    while not path.exists():
        if proc.poll() is not None:
            tail = log.read_text(encoding="utf-8", errors="replace")[-3000:]
            raise AssertionError(f"training subprocess exited early with {proc.returncode}:\n{tail}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{path.name} did not appear within {deadline_s}s")
        time.sleep(0.05)  # polling a file with a deadline, not synchronising on time


def test_resume_after_kill_continues_from_the_last_checkpoint(base_dir: Path, tmp_path: Path) -> None:
    ckpt, samples_file, marker = tmp_path / "ckpt", tmp_path / "first.jsonl", tmp_path / "saved-4"
    argv = [sys.executable, __file__, "worker", str(base_dir), str(ckpt), str(samples_file), str(marker)]
    with (tmp_path / "worker.log").open("wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=log, start_new_session=True)
    try:
        _wait_for(marker, proc, deadline_s=180, log=tmp_path / "worker.log")
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    first = [json.loads(line)["step"] for line in samples_file.read_text(encoding="utf-8").splitlines()]
    assert first == [1, 2, 3, 4]

    control = FakeControl()
    result = train_lora(
        model_name=str(base_dir),
        train_rows=ROWS,
        out_dir=tmp_path / "out",
        checkpoint_dir=ckpt,
        settings=_settings(train_steps=6, checkpoint_every=2),
        control=control,
    )
    assert result.resumed_from_step == 4 and result.steps_done == 6
    assert control.steps() == [5, 6]
    assert any("resuming" in m and "step 4" in m for _, m in control.events)

    straight = FakeControl()
    train_lora(
        model_name=str(base_dir),
        train_rows=ROWS,
        out_dir=tmp_path / "out-straight",
        checkpoint_dir=tmp_path / "ckpt-straight",
        settings=_settings(train_steps=6, checkpoint_every=2),
        control=straight,
    )
    # Same data order, RNG and optimizer state after the restart: the same losses as a run never killed.
    for a, b in zip(control.samples, straight.samples[4:], strict=True):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-5)


def _worker(base: str, ckpt: str, samples_file: str, marker: str) -> None:
    train_lora(
        model_name=base,
        train_rows=ROWS,
        out_dir=Path(ckpt).parent / "never",
        checkpoint_dir=Path(ckpt),
        settings=_settings(train_steps=6, checkpoint_every=2),
        control=_KilledAfterCheckpoint(Path(samples_file), Path(marker), hang_at=4),
    )


if __name__ == "__main__" and sys.argv[1:2] == ["worker"]:
    _worker(*sys.argv[2:6])
