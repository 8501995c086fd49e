"""Eval generation benchmark: batched greedy answers against one answer at a time, in the same run.

Loads the packaged SmolLM2-135M-Instruct once, puts a LoRA adapter on it (random, seeded weights: a
trained adapter's answers differ from the base's, and so do these), and generates the answers the
offline profile's eval generates (config.yaml: EVAL_SAMPLES held-out bank tasks and EVAL_SAMPLES
HumanEval problems, up to eval's MAX_NEW_TOKENS each):

- before: one prompt at a time, the stop rule asked after every token on the whole decoded answer
  (how eval generated before batching), for the base (adapter disabled) and for the adapter;
- after, round 1 (eval scores the base once per run, and the adapter): ``decode_batch`` with
  EVAL_BATCH_SIZE prompts per left-padded batch, each prompt answered by the base and the adapter in
  the same batch, and the cheap stop rule;
- after, later rounds (the adapter only): ``decode_batch`` with EVAL_BATCH_SIZE prompts per batch.

Prints the times, wall and CPU (with ``OMP_NUM_THREADS=1`` the CPU seconds are the work done, steady on a
shared machine where wall time also counts other jobs' turns), the ratios (target: after >= 3x faster)
and whether every answer is identical, token for token. Run: OMP_NUM_THREADS=1 python bench/bench_eval.py
[--batch-size N] [--samples N] [--max-new N]. No pass/fail.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

from heidi_engine.agents.dataset.heldout import choose_heldout, without_humaneval  # noqa: E402
from heidi_engine.agents.dataset.humaneval import HumanEvalUnavailable, instruction_for, load_problems  # noqa: E402
from heidi_engine.agents.dataset.tasks import instruction_text, load_bank  # noqa: E402
from heidi_engine.agents.dataset.template import render_prompt  # noqa: E402
from heidi_engine.agents.decoder import BASE, decode_batch  # noqa: E402
from heidi_engine.agents.evaluation.answers import MAX_NEW_TOKENS, answer_rule, function_complete  # noqa: E402
from heidi_engine.agents.student import load_model_and_tokenizer  # noqa: E402
from heidi_engine.bus.config import load_config  # noqa: E402


def one_at_a_time(model: Any, tokenizer: Any, prompt: str, config: Any) -> list[int]:
    """The answer as eval generated it before: no padding, the whole answer decoded after every token."""
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    encoded = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")
    start = int(encoded["input_ids"].shape[1])

    class EveryToken(StoppingCriteria):  # type: ignore[misc]
        def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
            done = [
                function_complete(tokenizer.decode(row[start:], skip_special_tokens=True)) for row in input_ids
            ]
            return torch.tensor(done, dtype=torch.bool)

    with torch.inference_mode():
        output = model.generate(
            input_ids=encoded["input_ids"],
            attention_mask=encoded["attention_mask"],
            generation_config=config,
            stopping_criteria=StoppingCriteriaList([EveryToken()]),
        )
    return [int(token) for token in output[0, start:]]


def _with_adapter(model: Any) -> Any:
    """``model`` with a seeded random LoRA adapter on its attention projections, as eval loads a round's."""
    import torch
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)  # peft draws A from the global generator
    peft_model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"]))
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, weight in peft_model.named_parameters():
            if "lora_B" in name:
                weight.copy_(torch.randn(weight.shape, generator=generator) * 0.05)
    return peft_model.eval()


def main() -> int:
    from transformers import GenerationConfig

    profile = load_config(ROOT / "config.yaml", env={})
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=profile.EVAL_BATCH_SIZE)
    parser.add_argument(
        "--samples", type=int, default=profile.EVAL_SAMPLES, help="held-out tasks and HumanEval problems (each)"
    )
    parser.add_argument("--max-new", type=int, default=MAX_NEW_TOKENS)
    args = parser.parse_args()
    wanted = profile.TASK_DIFFICULTY.split(",")
    pool = [task for task in load_bank() if profile.TASK_DIFFICULTY == "any" or task.difficulty in wanted]
    pool = without_humaneval(pool)[0]
    held = set(choose_heldout([task.task_id for task in pool], profile.VAL_RATIO, profile.SEED)[: args.samples])
    instructions = [instruction_text(task) for task in pool if task.task_id in held]
    try:
        instructions += [instruction_for(problem) for problem in load_problems(args.samples)]
    except HumanEvalUnavailable as exc:
        print(f"HumanEval skipped: {exc}")
    started = time.perf_counter()
    model, tokenizer = load_model_and_tokenizer(profile.BASE_MODEL)
    loaded_s = time.perf_counter() - started
    print(f"model loaded in {loaded_s:.1f}s; {len(instructions)} answers per variant, batch {args.batch_size}")
    config = GenerationConfig.from_dict(
        {
            "max_new_tokens": args.max_new,
            "do_sample": False,
            "pad_token_id": tokenizer.pad_token_id,
            "eos_token_id": tokenizer.eos_token_id,
        }
    )
    prompts = [render_prompt(tokenizer, text) for text in instructions]
    model = _with_adapter(model)
    rule = answer_rule()
    decode_batch(model, tokenizer, prompts[:1], config, batch_size=1, stop=rule)  # warm-up

    def timed(work: Any) -> tuple[Any, float, float]:
        wall, cpu = time.perf_counter(), time.process_time()
        result = work()
        return result, time.perf_counter() - wall, time.process_time() - cpu

    both, both_s, both_cpu = timed(lambda: decode_batch(
        model, tokenizer, [p for p in prompts for _ in range(2)], config, batch_size=2 * args.batch_size,
        stop=rule, adapters=[name for _ in prompts for name in (BASE, "default")],
    ))  # fmt: skip
    alone, alone_s, alone_cpu = timed(
        lambda: decode_batch(model, tokenizer, prompts, config, batch_size=args.batch_size, stop=rule)
    )
    adapter, adapter_s, adapter_cpu = timed(lambda: [one_at_a_time(model, tokenizer, p, config) for p in prompts])
    with model.disable_adapter():
        base, base_s, base_cpu = timed(lambda: [one_at_a_time(model, tokenizer, p, config) for p in prompts])
    pairs = [tokens for pair in zip(base, adapter, strict=True) for tokens in pair]
    same = sum(list(got.tokens) == want for got, want in zip(both, pairs, strict=True))
    same_alone = sum(list(got.tokens) == want for got, want in zip(alone, adapter, strict=True))
    tokens = sum(map(len, base)), sum(map(len, adapter))
    # CPU seconds are the steadier figure on a shared machine: wall time also counts other jobs' turns.
    print(f"before, base    (one at a time, decode every token): {base_s:7.1f}s wall, {base_cpu:7.1f}s CPU, {tokens[0]} tokens")
    print(f"before, adapter (one at a time, decode every token): {adapter_s:7.1f}s wall, {adapter_cpu:7.1f}s CPU, {tokens[1]} tokens")
    print(f"after, round 1: base and adapter, batches of {args.batch_size} prompts x 2: {both_s:7.1f}s wall, {both_cpu:7.1f}s CPU")
    print(f"after, later rounds: adapter, batches of {args.batch_size}:               {alone_s:7.1f}s wall, {alone_cpu:7.1f}s CPU")
    print(
        f"round 1 speed-up {(base_s + adapter_s) / both_s:.2f}x wall, {(base_cpu + adapter_cpu) / both_cpu:.2f}x CPU; "
        f"later rounds {adapter_s / alone_s:.2f}x wall, {adapter_cpu / alone_cpu:.2f}x CPU (target >= 3x); "
        f"identical answers: {same}/{2 * len(prompts)} and {same_alone}/{len(prompts)}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
