"""A stand-in generate stage for train/eval tests: writes ``data/round_N/{train,val}.jsonl`` from the bank.

Rows have the layout the validate stage writes (id, instruction, input, output, tests, metadata with the
entry point); outputs are the trusted reference solutions of ``tests/data/task_solutions.py``, so every
row's tests pass on its own output. The first ``--val`` bank tasks are the run's held-out set
(``heldout.json``), the validation rows of every round; round N trains on the ``--train`` tasks after
those of earlier rounds.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data.task_solutions import SOLUTIONS

from heidi_engine.agents.dataset.tasks import instruction_text, load_bank
from heidi_engine.agents.runtime import AgentRuntime, run_stage


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser()
    p.add_argument("--train", type=int, default=4, help="training rows per round")
    p.add_argument("--val", type=int, default=2, help="validation rows per round")
    p.add_argument("--empty-rounds", default="", help="comma list of rounds that get no rows at all")
    p.add_argument("--no-val-rounds", default="", help="comma list of rounds that get no validation rows")
    return p.parse_args()


def _rounds(text: str) -> set[int]:
    return {int(part) for part in text.split(",") if part.strip()}


def main(rt: AgentRuntime) -> None:
    args = _parse()
    bank = load_bank()
    held, rest = bank[: args.val], bank[args.val :]
    (rt.run_dir / "heldout.json").write_text(json.dumps([task.task_id for task in held]))
    tasks = rest[(rt.round - 1) * args.train : rt.round * args.train] + held
    rows = [
        {
            "id": f"r{rt.round}-{i}",
            "instruction": instruction_text(task),
            "input": "",
            "output": SOLUTIONS[task.task_id].strip(),
            "tests": task.tests,
            "metadata": {"entry_point": task.entry_point, "task_id": task.task_id},
        }
        for i, task in enumerate(tasks)
    ]
    folder = rt.run_dir / "data" / f"round_{rt.round}"
    folder.mkdir(parents=True, exist_ok=True)
    train, val = rows[: args.train], rows[args.train :]
    if rt.round in _rounds(args.empty_rounds):
        train, val = [], []
    if rt.round in _rounds(args.no_val_rounds):
        val = []
    for name, part in (("train", train), ("val", val)):
        with open(folder / f"{name}.jsonl", "w", encoding="utf-8") as handle:
            handle.writelines(json.dumps(row) + "\n" for row in part)
    rt.progress(
        f"wrote {len(train)} train and {len(val)} val rows", counters={"validated_ok": len(train) + len(val)}
    )


if __name__ == "__main__":
    sys.exit(run_stage(main))
