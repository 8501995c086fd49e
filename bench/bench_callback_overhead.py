"""Trainer monitoring overhead: time per optimizer step with and without BusReportingCallback.

Runs the same small Llama for ``--steps`` steps per run, alternating plain and monitored runs
``--rounds`` times, and prints the median time per step of each, the A/B difference, and the time
spent inside the callback's own hooks per step (the direct measure; the A/B difference is noisy on
a shared machine). The budget is < 1% of step time. Both arms log every step, so the
Trainer's own loss sync is the same in both.

    python bench/bench_callback_overhead.py [--steps 200] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from typing import Any

import torch
from transformers import LlamaConfig, LlamaForCausalLM, PrinterCallback, Trainer, TrainingArguments

from heidi_engine.agents.training.callback import BusReportingCallback, NullControl


class _ListControl(NullControl):
    """A control whose publish is an append: measures the callback, not a transport."""

    def __init__(self) -> None:
        self.samples: list[Mapping[str, float | int | None]] = []

    def publish_step(self, metrics: Mapping[str, float | int | None]) -> None:
        self.samples.append(metrics)


class _TimedCallback(BusReportingCallback):
    """Accumulates the wall time spent in the hooks that run every step."""

    def __init__(self, control: _ListControl) -> None:
        super().__init__(control)
        self.hook_s = 0.0

    def _timed(self, hook: Callable[..., None], *args: Any, **kwargs: Any) -> None:
        start = time.perf_counter()
        hook(*args, **kwargs)
        self.hook_s += time.perf_counter() - start

    def on_step_begin(self, *args: Any, **kwargs: Any) -> None:
        self._timed(super().on_step_begin, *args, **kwargs)

    def on_step_end(self, *args: Any, **kwargs: Any) -> None:
        self._timed(super().on_step_end, *args, **kwargs)

    def on_log(self, *args: Any, **kwargs: Any) -> None:
        self._timed(super().on_log, *args, **kwargs)


def _rows(n: int, seq_len: int, vocab: int) -> list[dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    rows = []
    for _ in range(n):
        ids = torch.randint(0, vocab, (seq_len,), generator=generator)
        rows.append({"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids})
    return rows


def _run(steps: int, callback: _TimedCallback | None, output_dir: str) -> float:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=2048,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    args = TrainingArguments(
        output_dir=output_dir,
        max_steps=steps,
        per_device_train_batch_size=4,
        gradient_accumulation_steps=1,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=not torch.cuda.is_available(),
        dataloader_pin_memory=False,
        disable_tqdm=True,
    )
    trainer = Trainer(
        model=LlamaForCausalLM(config),
        args=args,
        train_dataset=_rows(64, 64, config.vocab_size),
    )
    trainer.remove_callback(PrinterCallback)
    if callback is not None:
        trainer.add_callback(callback)
    start = time.perf_counter()
    trainer.train()
    return (time.perf_counter() - start) / steps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    opts = parser.parse_args(argv)
    plain: list[float] = []
    monitored: list[float] = []
    hook_per_step: list[float] = []
    with tempfile.TemporaryDirectory() as output_dir:
        _run(10, None, output_dir)  # warm-up: allocator, kernels, imports
        for _ in range(opts.rounds):
            plain.append(_run(opts.steps, None, output_dir))
            callback = _TimedCallback(_ListControl())
            monitored.append(_run(opts.steps, callback, output_dir))
            hook_per_step.append(callback.hook_s / opts.steps)
    step_plain, step_monitored = statistics.median(plain), statistics.median(monitored)
    hook = statistics.median(hook_per_step)
    print(f"steps per run          {opts.steps} x {opts.rounds} rounds (alternating)")
    print(f"runs, plain (ms)       {' '.join(f'{t * 1e3:.2f}' for t in plain)}")
    print(f"runs, monitored (ms)   {' '.join(f'{t * 1e3:.2f}' for t in monitored)}")
    print(f"step time, plain       {step_plain * 1e3:8.3f} ms (median)")
    print(f"step time, monitored   {step_monitored * 1e3:8.3f} ms (median)")
    print(f"A/B difference         {(step_monitored / step_plain - 1) * 100:+8.2f} %")
    print(f"callback hooks / step  {hook * 1e6:8.1f} us = {hook / step_monitored * 100:.3f} % of step time")
    return 0


if __name__ == "__main__":
    sys.exit(main())
