"""Eval generation benchmark: batched greedy answers against one answer at a time, in the same run.

Loads the packaged SmolLM2-135M-Instruct once and generates the answers the offline profile's eval
generates per variant (config.yaml: EVAL_SAMPLES held-out bank tasks and EVAL_SAMPLES HumanEval
problems, up to eval's MAX_NEW_TOKENS each), twice:

- before: one prompt at a time, the stop rule asked after every token on the whole decoded answer
  (how eval generated before batching);
- after: ``decode_batch`` with EVAL_BATCH_SIZE prompts per left-padded batch and the cheap stop rule.

Prints both times, wall and CPU (with ``OMP_NUM_THREADS=1`` the CPU seconds are the work done, steady on a
shared machine where wall time also counts other jobs' turns), the ratios (target: after >= 3x faster)
and whether every answer is identical, token for token. Run: OMP_NUM_THREADS=1 python bench/bench_eval.py [--batch-size N] [--samples N] [--max-new N]. No pass/fail.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

from heidi_engine.agents.decoder import decode_batch  # noqa: E402
from heidi_engine.agents.eval import MAX_NEW_TOKENS, answer_rule, function_complete  # noqa: E402
from heidi_engine.agents.heldout import choose_heldout, without_humaneval  # noqa: E402
from heidi_engine.agents.humaneval import HumanEvalUnavailable, instruction_for, load_problems  # noqa: E402
from heidi_engine.agents.student import load_model_and_tokenizer  # noqa: E402
from heidi_engine.agents.tasks import instruction_text, load_bank  # noqa: E402
from heidi_engine.agents.template import render_prompt  # noqa: E402
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
    decode_batch(model, tokenizer, prompts[:1], config, batch_size=1, stop=answer_rule())  # warm-up
    wall, cpu = time.perf_counter(), time.process_time()
    after = decode_batch(model, tokenizer, prompts, config, batch_size=args.batch_size, stop=answer_rule())
    after_s, after_cpu = time.perf_counter() - wall, time.process_time() - cpu
    wall, cpu = time.perf_counter(), time.process_time()
    before = [one_at_a_time(model, tokenizer, prompt, config) for prompt in prompts]
    before_s, before_cpu = time.perf_counter() - wall, time.process_time() - cpu
    same = sum(list(answer.tokens) == tokens for answer, tokens in zip(after, before, strict=True))
    tokens = sum(len(tokens) for tokens in before)
    # CPU seconds are the steadier figure on a shared machine: wall time also counts other jobs' turns.
    print(f"before (one at a time, decode every token): {before_s:7.1f}s wall, {before_cpu:7.1f}s CPU, {tokens} tokens")
    print(f"after  (batches of {args.batch_size}, rows leave when done):  {after_s:7.1f}s wall, {after_cpu:7.1f}s CPU")
    print(
        f"speed-up {before_s / after_s:.2f}x wall, {before_cpu / after_cpu:.2f}x CPU (target >= 3x); "
        f"identical answers: {same}/{len(prompts)}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
