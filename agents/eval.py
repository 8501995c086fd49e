"""The ``eval`` stage: the round's adapter against the base student (``python -m heidi_engine.agents.eval``).

Both variants share one copy of the weights (the base is the adapter disabled). Each gets the validation
loss and perplexity on the round's ``val.jsonl`` (when empty, on up to ``EVAL_SAMPLES`` training rows,
and the stage says so) and, when ``RUN_UNIT_TESTS`` is "1", pass@1 (greedy) on the validation tasks'
unit tests and on the first ``EVAL_SAMPLES`` HumanEval problems, run through the sandbox. The counters
``eval_total`` / ``eval_pass`` count the adapter's pass@1 runs.

The report goes to ``eval/report_round_N.json``; then the best round so far (lowest adapter validation
loss, the later round on a tie) is recorded in ``best_adapter.json`` and the ``best_adapter`` link. Every
evaluation item is a pause/stop boundary.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import sys
import textwrap
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from heidi_engine.agents.humaneval import HumanEvalUnavailable, Problem, load_problems
from heidi_engine.agents.runtime import AgentRuntime, FatalStageError, run_stage
from heidi_engine.agents.samples import already_counted
from heidi_engine.agents.train import (
    adapter_dir,
    has_adapter,
    load_student,
    prepare_environment,
    read_rows,
    round_data,
)
from heidi_engine.bus.event import utc_now_iso
from heidi_engine.bus.storage import atomic_write_json, ensure_private_dir, read_json

__all__ = ["MAX_NEW_TOKENS", "answer_code", "best_round", "function_complete", "main", "record_best"]

log = logging.getLogger(__name__)

MAX_NEW_TOKENS = 256
VARIANTS = ("base", "adapter")


_CODE_START = ("def ", "async def ", "class ", "@", "import ", "from ")
_DEF_LINE = re.compile(r"^[ \t]*(?:async[ \t]+)?def[ \t]", re.MULTILINE)


def _code_span(text: str) -> tuple[int, int] | None:
    """Where the code of a generated answer lies once it is complete; None while it may still grow.

    Complete means: a closed ``` block; code followed by a fence (a model that skipped the opening
    one); or unfenced code whose function body is followed by a line of prose at column 0.
    """
    fence = text.find("```")
    if fence != -1 and _DEF_LINE.search(text, 0, fence):
        return 0, fence
    if fence != -1:
        body = text.find("\n", fence) + 1
        end = text.find("```", body) if body else -1
        return (body, end) if end != -1 else None
    start: int | None = None
    in_body = False
    offset = 0
    for line in text.split("\n")[:-1]:  # the last line may still be growing
        at, offset = offset, offset + len(line) + 1
        if not line.strip():
            continue
        if line[0] in " \t":
            in_body = start is not None
        elif line.startswith(_CODE_START) or line.startswith("#"):
            start = at if start is None else start
        elif in_body:
            return start or 0, at
    return None


def function_complete(text: str) -> bool:
    """Whether a generated answer has finished its code (see :func:`answer_code`); stops generation."""
    return _code_span(text) is not None


def answer_code(text: str) -> str:
    """The code of a generated answer: what :func:`function_complete` delimits, else (an answer cut
    off by the token limit) :func:`~heidi_engine.agents.tasks.extract_code`'s reading of it."""
    from heidi_engine.agents.tasks import extract_code

    span = _code_span(text)
    if span is None and "```" not in text:
        # Unfenced and cut off: a line of prose at the end closes it like any other.
        span = _code_span(text + "\n.\n")
    if span is None:
        return extract_code(text)
    return textwrap.dedent(text[span[0] : span[1]]).strip()


@dataclass
class _Job:
    """One pass@1 item of one variant: the program, its tests and the sandbox's verdict."""

    variant: str
    kind: str  # "val" or "humaneval"
    item: str
    code: str
    tests: str
    entry_point: str | None
    passed: bool = False


def _generate(model: Any, tokenizer: Any, instruction: str, input_text: str = "") -> str:
    """The greedy answer, stopped at the end of its function (see :func:`function_complete`)."""
    import torch
    from transformers import GenerationConfig, StoppingCriteria, StoppingCriteriaList

    from heidi_engine.agents.template import render_prompt

    encoded = tokenizer(
        render_prompt(tokenizer, instruction, input_text), add_special_tokens=False, return_tensors="pt"
    )
    start = encoded["input_ids"].shape[1]

    class FunctionEnd(StoppingCriteria):  # type: ignore[misc]
        def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
            done = [
                function_complete(tokenizer.decode(row[start:], skip_special_tokens=True))
                for row in input_ids
            ]
            return torch.tensor(done, dtype=torch.bool, device=input_ids.device)

    config = GenerationConfig.from_dict(
        {
            "max_new_tokens": MAX_NEW_TOKENS,
            "do_sample": False,
            "pad_token_id": tokenizer.pad_token_id,
            "eos_token_id": tokenizer.eos_token_id,
        }
    )
    device = next(model.parameters()).device
    with torch.inference_mode():
        output = model.generate(
            input_ids=encoded["input_ids"].to(device),
            attention_mask=encoded["attention_mask"].to(device),
            generation_config=config,
            stopping_criteria=StoppingCriteriaList([FunctionEnd()]),
        )
    return str(tokenizer.decode(output[0, start:], skip_special_tokens=True))


@contextlib.contextmanager
def _variant(model: Any, name: str) -> Iterator[None]:
    from heidi_engine.agents.evaluation import adapter_disabled

    if name == "base":
        with adapter_disabled(model):
            yield
    else:
        yield


def _eval_rows(rt: AgentRuntime) -> tuple[list[dict[str, Any]], str]:
    limit = rt.config.EVAL_SAMPLES
    data = round_data(rt.run_dir, rt.round)
    val_path = data / "val.jsonl"
    rows = read_rows(val_path) if val_path.is_file() else []
    if rows:
        return rows[:limit], "val"
    train_path = data / "train.jsonl"
    rows = read_rows(train_path)[:limit] if train_path.is_file() else []
    if rows:
        rt.progress(
            f"no validation rows this round: scoring on {len(rows)} training rows instead", level="warn"
        )
        return rows, "train"
    rt.progress("no validation or training rows this round: no validation loss", level="warn")
    return [], "none"


def _problems(rt: AgentRuntime) -> list[Problem]:
    try:
        return load_problems(rt.config.EVAL_SAMPLES)
    except HumanEvalUnavailable as exc:
        rt.progress(f"HumanEval skipped: {exc}", level="warn")
        return []


def _run_jobs(rt: AgentRuntime, jobs: Sequence[_Job]) -> None:
    from heidi_engine.agents.sandbox import SandboxLimits, run_solution, usable_cpus
    from heidi_engine.bus.isolation import NONE_WARNING

    cfg = rt.config
    limits = SandboxLimits(
        timeout_s=cfg.SANDBOX_TIMEOUT_S,
        cpu_s=max(1, math.ceil(cfg.SANDBOX_TIMEOUT_S)),
        memory_mb=cfg.SANDBOX_MEMORY_MB,
    )

    if cfg.SANDBOX == "none":
        rt.progress(f"eval: {NONE_WARNING}", level="warn")

    def run(job: _Job) -> bool:
        return run_solution(
            job.code, job.tests, limits, entry_point=job.entry_point, sandbox=cfg.SANDBOX
        ).passed

    # run_many takes no entry point, which HumanEval's check(candidate) needs; threads only wait.
    with ThreadPoolExecutor(max_workers=max(1, min(len(jobs), usable_cpus()))) as pool:
        for job, passed in zip(jobs, pool.map(run, jobs), strict=True):
            job.passed = passed
            # The agent's log (logs/eval_round_N.log) keeps what each answer was, for a closer look.
            log.info(
                "%s %s %s: %s\n%s", job.variant, job.item, "pass" if passed else "FAIL", job.kind, job.code
            )


def _pass_jobs(
    rt: AgentRuntime,
    model: Any,
    tokenizer: Any,
    variants: Sequence[str],
    rows: Sequence[Mapping[str, Any]],
    problems: Sequence[Problem],
) -> list[_Job]:
    from heidi_engine.agents.humaneval import checker_for, instruction_for, program_for

    jobs: list[_Job] = []
    tasks = [row for row in rows if isinstance(row.get("tests"), str) and row["tests"].strip()]
    for index, row in enumerate(tasks):
        meta = row.get("metadata")
        entry = meta.get("entry_point") if isinstance(meta, dict) and "def check(" in row["tests"] else None
        for name in variants:
            rt.checkpoint()
            with _variant(model, name):
                answer = _generate(model, tokenizer, str(row["instruction"]), str(row.get("input") or ""))
            jobs.append(
                _Job(
                    name,
                    "val",
                    str(row.get("id", f"val/{index}")),
                    answer_code(answer),
                    row["tests"],
                    entry if isinstance(entry, str) else None,
                )
            )
    for problem in problems:
        for name in variants:
            rt.checkpoint()
            with _variant(model, name):
                answer = _generate(model, tokenizer, instruction_for(problem))
            code = program_for(problem, answer_code(answer))
            jobs.append(
                _Job(name, "humaneval", problem.task_id, code, checker_for(problem), problem.entry_point)
            )
    rt.progress(f"running {len(jobs)} generated solutions in the sandbox")
    _run_jobs(rt, jobs)
    return jobs


def _rate(jobs: Sequence[_Job], variant: str, kind: str) -> tuple[float | None, int]:
    mine = [job for job in jobs if job.variant == variant and job.kind == kind]
    return (sum(job.passed for job in mine) / len(mine) if mine else None), len(mine)


def best_round(reports: Mapping[int, Mapping[str, Any]]) -> tuple[int, float] | None:
    """``(round, adapter val_loss)`` of the best report: the lowest adapter validation loss, the later
    round on a tie; rounds without an adapter loss do not compete."""
    best: tuple[int, float] | None = None
    for round_no in sorted(reports):
        adapter = reports[round_no].get("adapter")
        loss = adapter.get("val_loss") if isinstance(adapter, Mapping) else None
        if isinstance(loss, bool) or not isinstance(loss, (int, float)) or not math.isfinite(loss):
            continue
        if best is None or loss <= best[1]:
            best = (round_no, float(loss))
    return best


def _reports(run_dir: Path, up_to: int) -> dict[int, dict[str, Any]]:
    found: dict[int, dict[str, Any]] = {}
    for round_no in range(1, up_to + 1):
        path = run_dir / "eval" / f"report_round_{round_no}.json"
        try:
            report = read_json(path)
        except (OSError, ValueError):
            continue
        if isinstance(report, dict) and has_adapter(adapter_dir(run_dir, round_no)):
            found[round_no] = report
    return found


def record_best(run_dir: Path, round_no: int, val_loss: float) -> None:
    """Write ``best_adapter.json`` and point the ``best_adapter`` link at ``out_lora_round_<round_no>``."""
    target = adapter_dir(run_dir, round_no).name
    atomic_write_json(
        run_dir / "best_adapter.json", {"round": round_no, "adapter_dir": target, "val_loss": val_loss}
    )
    link = run_dir / "best_adapter"
    temporary = run_dir / f".best_adapter.{os.getpid()}.tmp"
    with contextlib.suppress(FileNotFoundError):
        temporary.unlink()
    temporary.symlink_to(target)  # relative: the run folder can move
    os.replace(temporary, link)


def _scores(
    losses: Mapping[str, tuple[float | None, float | None]], jobs: Sequence[_Job], name: str, n_val: int
) -> dict[str, Any]:
    val_pass, _ = _rate(jobs, name, "val")
    humaneval_pass, n_humaneval = _rate(jobs, name, "humaneval")
    loss, ppl = losses[name]
    return {
        "val_loss": loss,
        "val_ppl": ppl,
        "val_pass_at_1": val_pass,
        "humaneval_pass_at_1": humaneval_pass,
        "n_val": n_val,
        "n_humaneval": n_humaneval,
    }


def _count_new(rt: AgentRuntime, jobs: Sequence[_Job]) -> dict[str, int]:
    mine = [job for job in jobs if job.variant == "adapter"]
    totals = {"eval_total": len(mine), "eval_pass": sum(job.passed for job in mine)}
    # A restarted eval recomputes everything; what an earlier attempt already counted is not counted twice.
    counted = already_counted(rt.run_dir, "eval", rt.round).counters
    for name in totals:
        totals[name] -= counted.get(name, 0)
    return {name: value for name, value in totals.items() if value > 0}


def main(rt: AgentRuntime) -> None:
    """Evaluate round ``rt.round``'s adapter and the base student; record the best round."""
    cfg = rt.config
    prepare_environment(cfg.BASE_MODEL)
    from heidi_engine.agents.evaluation import eval_loss

    rows, source = _eval_rows(rt)
    problems = _problems(rt) if cfg.RUN_UNIT_TESTS == "1" else []
    adapter = adapter_dir(rt.run_dir, rt.round)
    variants = VARIANTS if has_adapter(adapter) else VARIANTS[:1]
    if len(variants) == 1:
        rt.progress(f"no adapter in {adapter.name}: scoring the base model only", level="warn")
    rt.checkpoint()
    rt.progress(
        f"evaluating round {rt.round}: {len(rows)} {source} rows, {len(problems)} HumanEval problems, {' and '.join(variants)}"
    )
    model, tokenizer = load_student(cfg.BASE_MODEL, for_training=False)
    if len(variants) == 2:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter))
        model.eval()
    losses: dict[str, tuple[float | None, float | None]] = {}
    for name in variants:
        rt.checkpoint()
        try:
            with _variant(model, name):
                losses[name] = eval_loss(model, tokenizer, rows, cfg.SEQ_LEN) if rows else (None, None)
        except ValueError as exc:
            raise FatalStageError(f"cannot score the {source} rows: {exc}") from None
    jobs = _pass_jobs(rt, model, tokenizer, variants, rows, problems) if cfg.RUN_UNIT_TESTS == "1" else []
    report = {
        "round": rt.round,
        **{name: _scores(losses, jobs, name, len(rows)) if name in losses else None for name in VARIANTS},
        "adapter_dir": adapter.name if len(variants) == 2 else None,
        "val_source": source,
        "seed": cfg.SEED,
        "ts": utc_now_iso(),
    }
    report_path = ensure_private_dir(rt.run_dir / "eval") / f"report_round_{rt.round}.json"
    atomic_write_json(report_path, report)
    rt.progress(_summary(report), counters=_count_new(rt, jobs), artifacts=[rt.relative(report_path)])
    best = best_round(_reports(rt.run_dir, rt.round))
    if best is None:
        rt.progress("no round has an adapter validation loss yet: no best adapter recorded", level="warn")
        return
    record_best(rt.run_dir, *best)
    rt.progress(
        f"best adapter: round {best[0]} (adapter val_loss {best[1]:.4f}) -> best_adapter",
        level="success",
        artifacts=[rt.relative(report_path), "best_adapter", "best_adapter.json"],
    )


def _summary(report: Mapping[str, Any]) -> str:
    parts = []
    for name in VARIANTS:
        scores = report.get(name)
        if not isinstance(scores, Mapping):
            continue
        text = [f"{name}:"]
        if scores["val_loss"] is not None:
            text.append(f"val_loss {scores['val_loss']:.4f} (ppl {scores['val_ppl']:.2f})")
        for key, label in (("val_pass_at_1", "val pass@1"), ("humaneval_pass_at_1", "HumanEval pass@1")):
            if scores[key] is not None:
                text.append(f"{label} {scores[key]:.2f}")
        parts.append(" ".join(text))
    return f"round {report['round']} eval: " + "; ".join(parts)


if __name__ == "__main__":
    sys.exit(run_stage(main))
