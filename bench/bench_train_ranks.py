"""Training on 1 and 2 processes (torchrun, gloo on CPU): tokens/s of each, and the per-step cost of the
rank-0 pause/stop collective.

Builds a small random Llama with the packaged SmolLM2 tokenizer, then runs the real ``train_lora`` under
``torchrun --nproc-per-node N`` for N = 1 and 2, alternating ``--rounds`` times in the same run, and prints
the median tokens/s (the sum over the ranks, as the trainer samples report it) of each, their ratio, and
the time each step spends in the pause/stop all-reduce (``StepCollective.exchange``) as a share of the
step. With one process there is no collective. Use ``OMP_NUM_THREADS=1`` on a small machine.

    OMP_NUM_THREADS=1 python bench/bench_train_ranks.py [--steps 40] [--rounds 2] [--seq-len 256]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path


def _build_model(folder: Path, hidden: int, layers: int) -> None:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from heidi_engine.agents.student import resolve_model

    ref = resolve_model("smollm2-135m-instruct")
    tokenizer = AutoTokenizer.from_pretrained(ref.path_or_id, gguf_file=ref.gguf_file, local_files_only=True)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=hidden * 2,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=1024, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id)  # fmt: skip
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def _rank(args: argparse.Namespace) -> None:
    """One rank: train, time the collective; rank 0 writes its figures to ``args.out``."""
    from heidi_engine.agents.training import collective as collective
    from heidi_engine.agents.training.callback import NullControl
    from heidi_engine.agents.training.lora import TrainSettings, train_lora

    exchange_s: list[float] = []
    original = collective.StepCollective.exchange

    def timed(self: collective.StepCollective, verdict: int, tokens: int) -> tuple[int, int]:
        start = time.perf_counter()
        try:
            return original(self, verdict, tokens)
        finally:
            exchange_s.append(time.perf_counter() - start)

    collective.StepCollective.exchange = timed  # type: ignore[method-assign]

    class Samples(NullControl):
        def __init__(self) -> None:
            self.rows: list[Mapping[str, float | int | None]] = []

        def publish_step(self, metrics: Mapping[str, float | int | None]) -> None:
            self.rows.append(metrics)

    control = Samples()
    # Rows long enough to fill seq_len (about 10 tokens per repeat): the figures are at that length.
    repeat = max(1, args.seq_len // 20)
    rows = [{"instruction": f"Write function f{i} that adds {i}. " * repeat,
             "output": f"def f{i}(x):\n    return x + {i}\n" * repeat} for i in range(64)]  # fmt: skip
    settings = TrainSettings(seq_len=args.seq_len, batch_size=2, grad_accum=1, train_steps=args.steps, lora_r=8,
                             lora_alpha=16, lora_dropout=0.0, learning_rate=1e-4, seed=1, checkpoint_every=0,
                             load_in_4bit=args.load_in_4bit)  # fmt: skip
    with tempfile.TemporaryDirectory() as folder:
        train_lora(model_name=args.model, train_rows=rows, out_dir=Path(folder) / "out",
                   checkpoint_dir=Path(folder) / "ckpt", settings=settings, control=control, resume=False)  # fmt: skip
    import torch

    rank = os.environ.get("RANK", "0")
    peak_mb = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
    Path(f"{args.out}.peak{rank}").write_text(json.dumps(peak_mb), encoding="utf-8")
    if rank == "0":
        measured = control.rows[len(control.rows) // 4 :]  # the first steps warm up
        figures = {
            "tokens_per_s": statistics.median(float(r["tokens_per_s"] or 0) for r in measured),
            "step_s": statistics.median(float(r["step_time_s"] or 0) for r in measured),
            "exchange_s": statistics.median(exchange_s) if exchange_s else 0.0,
        }
        Path(args.out).write_text(json.dumps(figures), encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--model", help="a model folder or name (default: a random Llama of --hidden x --layers)")
    parser.add_argument("--nprocs", default="1,2", help="process counts to compare, e.g. 1,2")
    parser.add_argument("--load-in-4bit", action="store_true", help="QLoRA: the base in 4 bits (CUDA only)")
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.out is not None:
        _rank(args)
        return
    nprocs = [int(n) for n in args.nprocs.split(",")]
    results: dict[int, list[dict[str, float]]] = {n: [] for n in nprocs}
    peaks: dict[int, list[float | None]] = {}
    with tempfile.TemporaryDirectory() as folder:
        model = args.model
        if model is None:
            model = str(Path(folder) / "model")
            _build_model(Path(model), args.hidden, args.layers)
        for _ in range(args.rounds):
            for nproc in nprocs:
                out = Path(folder) / f"figures-{nproc}.json"
                command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
                           __file__, "--steps", str(args.steps), "--seq-len", str(args.seq_len),
                           "--model", str(model), "--out", str(out)]  # fmt: skip
                if args.load_in_4bit:
                    command.append("--load-in-4bit")
                subprocess.run(command, check=True, env={**os.environ, "TQDM_DISABLE": "1"})
                results[nproc].append(json.loads(out.read_text(encoding="utf-8")))
                peaks[nproc] = [json.loads(Path(f"{out}.peak{r}").read_text(encoding="utf-8")) for r in range(nproc)]

    def median(nproc: int, key: str) -> float:
        return statistics.median(r[key] for r in results[nproc])

    shown = args.model or f"random Llama hidden {args.hidden} x {args.layers} layers"
    print(f"model: {shown}{' (4-bit)' if args.load_in_4bit else ''}, seq_len {args.seq_len}, batch 2 per rank, "
          f"{args.steps} steps x {args.rounds} rounds; os.cpu_count() = {os.cpu_count()}")  # fmt: skip
    for nproc in nprocs:
        memory = ", ".join(f"rank {r} {p:.0f} MB" if p is not None else f"rank {r} -" for r, p in enumerate(peaks[nproc]))
        print(f"{nproc} process(es): {median(nproc, 'tokens_per_s'):10.0f} tokens/s   "
              f"step {median(nproc, 'step_s') * 1e3:8.1f} ms   peak GPU memory: {memory}")  # fmt: skip
    if 1 in results and 2 in results:
        print(f"ratio 2/1 processes: {median(2, 'tokens_per_s') / median(1, 'tokens_per_s'):.2f}")
    if 2 in results:
        exchange, step = median(2, "exchange_s"), median(2, "step_s")
        print(f"pause/stop collective (all-reduce of 2 int64): {exchange * 1e6:.0f} us per step "
              f"= {exchange / step * 100:.2f}% of a 2-process step")  # fmt: skip


if __name__ == "__main__":
    main()
