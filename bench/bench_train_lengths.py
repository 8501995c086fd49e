"""Training throughput with and without length-grouped batches, in the same run.

Builds the small random Llama of ``bench_train_ranks.py`` (the packaged SmolLM2 tokenizer), then runs the
real ``train_lora`` on rows of mixed lengths (short and long answers, as a round's samples are) with
``group_by_length`` off and on, alternating ``--rounds`` times, and prints the median real (non-padding)
tokens/s of each and their ratio. Use ``OMP_NUM_THREADS=1`` on a small machine.

    OMP_NUM_THREADS=1 python bench/bench_train_lengths.py [--steps 30] [--rounds 2] [--batch-size 2]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_train_ranks import _build_model

from heidi_engine.agents.training.callback import NullControl
from heidi_engine.agents.training.lora import TrainSettings, train_lora


class Samples(NullControl):
    """Keeps the trainer's per-step samples."""

    def __init__(self) -> None:
        self.rows: list[Mapping[str, float | int | None]] = []

    def publish_step(self, metrics: Mapping[str, float | int | None]) -> None:
        self.rows.append(metrics)


def _tokens_per_s(model: Path, rows: list[dict[str, str]], args: argparse.Namespace, grouped: bool) -> float:
    control = Samples()
    settings = TrainSettings(seq_len=args.seq_len, batch_size=args.batch_size, grad_accum=1, train_steps=args.steps,
                             lora_r=8, lora_alpha=16, lora_dropout=0.0, learning_rate=1e-4, seed=1,
                             checkpoint_every=0, group_by_length=grouped)  # fmt: skip
    with tempfile.TemporaryDirectory() as folder:
        train_lora(model_name=str(model), train_rows=rows, out_dir=Path(folder) / "out",
                   checkpoint_dir=Path(folder) / "ckpt", settings=settings, control=control, resume=False)  # fmt: skip
    measured = control.rows[len(control.rows) // 4 :]  # the first steps warm up
    return statistics.median(float(r["tokens_per_s"] or 0) for r in measured)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    args = parser.parse_args()
    draw = random.Random(0)
    # From a one-line answer to one that fills SEQ_LEN: about 10 tokens per repeat.
    rows = []
    for i in range(64):
        repeat = draw.randint(1, max(1, args.seq_len // 12))
        rows.append(
            {"instruction": f"Write function f{i}.", "output": f"def f{i}(x):\n    return x + {i}\n" * repeat}
        )
    figures: dict[bool, list[float]] = {False: [], True: []}
    with tempfile.TemporaryDirectory() as folder:
        model = Path(folder) / "model"
        _build_model(model, args.hidden, args.layers)
        for _ in range(args.rounds):
            for grouped in (False, True):
                figures[grouped].append(_tokens_per_s(model, rows, args, grouped))
    plain, grouped = statistics.median(figures[False]), statistics.median(figures[True])
    print(
        f"random batches:         {plain:8.0f} tokens/s (runs: {', '.join(f'{v:.0f}' for v in figures[False])})"
    )
    print(
        f"length-grouped batches: {grouped:8.0f} tokens/s (runs: {', '.join(f'{v:.0f}' for v in figures[True])})"
    )
    print(
        f"ratio {grouped / plain:.2f}x (batch {args.batch_size}, seq_len {args.seq_len}, {args.steps} steps)"
    )


if __name__ == "__main__":
    main()
