"""Efficacy benchmark: does a 2-round run make the student better on tasks it never trained on?

A real supervisor runs two rounds offline: a loopback OpenAI-compatible teacher (tests/fakes) answers
every task with its known-correct solution (tests/data/task_solutions.py), validate keeps the run's
held-out tasks out of training, train fits a LoRA adapter on the packaged SmolLM2-135M-Instruct (CPU is
fine), and eval scores base and adapter on the held-out set. Printed per round: held-out val loss of
base and adapter and their ratio (target: adapter <= 0.9 x base), and pass@1 with Wilson 95% intervals
when the unit-test gate is on (``--pass-at-1``; slow on a CPU: every answer is generated greedily).

Run: python bench/bench_efficacy.py [--steps 8] [--lr 0.001] [--samples 15] [--pass-at-1]. Prints figures; no pass/fail.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from data.task_solutions import SOLUTIONS  # noqa: E402
from fakes.openai_server import FakeOpenAIServer  # noqa: E402
from harness import SupervisorProc  # noqa: E402

from heidi_engine.agents.dataset.tasks import instruction_text, load_bank  # noqa: E402

BANK = {instruction_text(task): task for task in load_bank()}


def knows_the_answers(request: dict[str, Any]) -> str:
    task = BANK[request["messages"][-1]["content"]]
    return f"```python\n{SOLUTIONS[task.task_id]}```\n"


def _rate(scores: dict[str, Any], key: str, n_key: str) -> str:
    rate, ci = scores.get(f"{key}_pass_at_1"), scores.get(f"{key}_ci")
    if rate is None:
        return "-"
    interval = f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else ""
    return f"{rate:.2f}{interval} n={scores.get(n_key)}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=8, help="TRAIN_STEPS per round")
    parser.add_argument("--lr", type=float, default=0.001, help="LEARNING_RATE")
    parser.add_argument("--samples", type=int, default=15, help="SAMPLES_PER_ROUND")
    parser.add_argument("--eval-samples", type=int, default=6, help="EVAL_SAMPLES (held-out rows scored)")
    parser.add_argument("--pass-at-1", action="store_true", help="unit-test gate on: pass@1 too (slow)")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # the supervisor is stopped on the way out
    config = {
        "BASE_MODEL": "smollm2-135m-instruct",
        "TEACHER_MODEL": "gpt-4o-mini",
        "ROUNDS": 2,
        "SAMPLES_PER_ROUND": args.samples,
        "TASK_SOURCE": "bank",
        "TASK_DIFFICULTY": "easy",
        "VAL_RATIO": 0.15,
        "EVAL_SAMPLES": args.eval_samples,
        "SEQ_LEN": 256,
        "BATCH_SIZE": 2,
        "GRAD_ACCUM": 1,
        "TRAIN_STEPS": args.steps,
        "LORA_R": 16,
        "LORA_ALPHA": 32,
        "LEARNING_RATE": args.lr,
        "CHECKPOINT_EVERY": args.steps,
        "RUN_UNIT_TESTS": "1" if args.pass_at_1 else "0",
        "AGENT_HEARTBEAT_TIMEOUT_S": 300.0,
    }
    with tempfile.TemporaryDirectory(prefix="at-eff-", dir="/tmp") as folder, FakeOpenAIServer(
        responder=knows_the_answers
    ) as server:
        home = Path(folder)
        config["TEACHER_BASE_URL"] = server.url
        text = "".join(f"{key}: {json.dumps(value)}\n" for key, value in config.items())
        env = {"OPENAI_API_KEY": "sk-bench-loopback", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        sup = SupervisorProc(home, env=env, config=text).wait_ready()
        try:
            started = time.monotonic()
            run_id = sup.call("start")["run_id"]
            final = sup.wait_status("completed", "failed", "stopped", timeout_s=7200)
            took = time.monotonic() - started
            if final["status"] != "completed":
                print(f"run {final['status']}: {final.get('error')}\n{sup.output()}")
                return 1
            run_dir = home / "runs" / run_id
            heldout = json.loads((run_dir / "heldout.json").read_text())
            print(f"2 rounds in {took:.0f} s; {len(heldout)} held-out tasks, {args.samples} samples/round, "
                  f"{args.steps} steps/round at lr {args.lr}")  # fmt: skip
            print(f"{'round':<6} {'base val loss':>14} {'adapter val loss':>17} {'ratio':>7}  "
                  f"{'held-out pass@1 base':<24} {'adapter':<24} HumanEval base / adapter")  # fmt: skip
            for round_no in (1, 2):
                report = json.loads((run_dir / "eval" / f"report_round_{round_no}.json").read_text())
                base, adapter = report["base"], report["adapter"]
                ratio = adapter["val_loss"] / base["val_loss"] if base["val_loss"] else float("nan")
                print(
                    f"{round_no:<6} {base['val_loss']:>14.4f} {adapter['val_loss']:>17.4f} {ratio:>7.3f}  "
                    f"{_rate(base, 'val', 'n_val'):<24} {_rate(adapter, 'val', 'n_val'):<24} "
                    f"{_rate(base, 'humaneval', 'n_humaneval')} / {_rate(adapter, 'humaneval', 'n_humaneval')}"
                )
            print("target: adapter held-out val loss <= 0.9 x base")
        finally:
            sup.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
