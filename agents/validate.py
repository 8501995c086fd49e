"""The validate stage: secret, schema and duplicate checks, the optional unit-test gate, and the split.

Every sample of ``raw.jsonl`` (in id order, so verdicts do not depend on the order replies arrived in)
gets one verdict, checked in this order:

- ``rejected_secret``: generate recorded ``metadata.secret_kinds``, or a rescan of every text field with
  the redaction rule table finds one. Such a sample is never written to ``clean.jsonl`` or later files.
- ``rejected_schema``: a required field is missing or of the wrong type; the instruction, output or tests
  are empty; the output or the tests do not compile as Python; the output does not define the task's
  entry point; or instruction + input + output exceed ``SEQ_LEN * 4`` characters. Four characters per
  token is the usual rule of thumb for English and code with BPE tokenizers; it needs no tokenizer
  (validate stays free of torch) and only has to catch samples that could not fit, since training cuts
  what is slightly too long anyway.
- ``rejected_dedup``: the output duplicates, exactly or nearly (:mod:`heidi_engine.agents.dataset.dedup`), a
  sample already accepted in this round or in an earlier round's ``clean.jsonl`` of this run.
- otherwise ``validated_ok``, written to ``clean.jsonl``.

With ``RUN_UNIT_TESTS=1`` each clean sample's code then runs with its tests in the sandbox
(``test_pass`` samples go to ``tested.jsonl``). Finally the survivors (tested when gated, else clean) are
split by task: answers to the run's held-out tasks (``heldout.json``, see :mod:`heldout`) never reach
``train.jsonl``; in the round that answered them they become the run's validation rows
(``data/heldout/val.jsonl``; a held-out task of the shipped bank gets its verified reference solution
instead, see :mod:`heldout`, so that row exists however weak the teacher), and every round's
``val.jsonl`` is a copy of those rows, so val loss is measured on the same tasks every round.

The stage recomputes everything from ``raw.jsonl`` on every attempt and writes each file whole, so a resumed
stage produces the same files; counters already in ``events.jsonl`` for this stage and round are
subtracted, so nothing is counted twice.
"""

from __future__ import annotations

import ast
import math
import sys
import warnings
from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from heidi_engine.agents.dataset.dedup import DedupIndex
from heidi_engine.agents.dataset.heldout import (
    HeldoutError,
    heldout_rows,
    read_heldout,
    task_id_of,
    with_references,
)
from heidi_engine.agents.dataset.samples import Sample, already_counted, read_jsonl_skipping_bad, write_jsonl
from heidi_engine.agents.layout import RoundFiles, heldout_files
from heidi_engine.agents.runtime import AgentRuntime, FatalStageError, run_stage
from heidi_engine.agents.sandbox.runner import SandboxLimits, network_isolation_message, run_many, usable_cpus
from heidi_engine.bus.redaction import Redactor, default_redactor

__all__ = ["CHARS_PER_TOKEN", "REJECTIONS", "main", "schema_problem", "secret_kinds", "split_heldout"]

REJECTIONS = ("rejected_secret", "rejected_schema", "rejected_dedup")
CHARS_PER_TOKEN = 4
_CHUNK = 50
_EXAMPLES = 3
_VERB = {"output": "is", "tests": "are"}
_REQUIRED: dict[str, type] = {
    "id": str,
    "instruction": str,
    "input": str,
    "output": str,
    "tests": str,
    "metadata": dict,
}


def _compile_problem(code: str, what: str) -> str | None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # SyntaxWarnings (odd escapes) do not make code invalid
            compile(code, f"<{what}>", "exec", dont_inherit=True)
    except SyntaxError as exc:
        return f"{what} {_VERB[what]} not valid Python: {exc.msg} (line {exc.lineno})"
    except ValueError as exc:  # null bytes
        return f"{what} {_VERB[what]} not valid Python: {exc}"
    return None


def _top_level_names(code: str) -> set[str]:
    names: set[str] = set()
    for node in ast.parse(code).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(t.id for t in targets if isinstance(t, ast.Name))
    return names


def schema_problem(row: Mapping[str, Any], seq_len: int) -> str | None:
    """Why ``row`` is not a usable sample (one short line), or None when it is."""
    for name, kind in _REQUIRED.items():
        if name not in row:
            return f"missing field {name!r}"
        if not isinstance(row[name], kind):
            return f"{name} must be {kind.__name__}, got {type(row[name]).__name__}"
    try:
        sample = Sample.model_validate(row)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(part) for part in first["loc"])
        return f"{where}: {first['msg']}"
    for name in ("instruction", "output", "tests"):
        if not getattr(sample, name).strip():
            return f"empty {name}"
    problem = _compile_problem(sample.output, "output") or _compile_problem(sample.tests, "tests")
    if problem:
        return problem
    entry_point = sample.metadata.entry_point
    if entry_point not in _top_level_names(sample.output):
        return f"output does not define {entry_point}()"
    size = len(sample.instruction) + len(sample.input) + len(sample.output)
    if size > seq_len * CHARS_PER_TOKEN:
        return f"too long: {size} characters > SEQ_LEN*{CHARS_PER_TOKEN} = {seq_len * CHARS_PER_TOKEN}"
    return None


def _texts(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, Mapping):
        return [text for item in value.values() for text in _texts(item)]
    if isinstance(value, (list, tuple)):
        return [text for item in value for text in _texts(item)]
    return []


def secret_kinds(row: Mapping[str, Any], redactor: Redactor) -> frozenset[str]:
    """The kinds of secret generate recorded for ``row`` plus any a rescan of its text finds."""
    kinds: set[str] = set()
    metadata = row.get("metadata")
    recorded = metadata.get("secret_kinds") if isinstance(metadata, Mapping) else None
    if isinstance(recorded, list):
        kinds.update(str(kind) for kind in recorded)
    for text in _texts(row):
        kinds |= redactor.scan(text)
    return frozenset(kinds)


def split_heldout(
    rows: Sequence[Mapping[str, Any]], heldout: Collection[str]
) -> tuple[list[Mapping[str, Any]], list[Mapping[str, Any]]]:
    """``(train, held)``: the rows whose task (``metadata.task_id``) is not held out, and those whose task
    is; both in the order given. A row without a task id is never held out."""
    train: list[Mapping[str, Any]] = []
    held: list[Mapping[str, Any]] = []
    for row in rows:
        (held if task_id_of(row) in heldout else train).append(row)
    return train, held


class _Reporter:
    """Sends counter totals as deltas over what the run's events already counted for this stage."""

    def __init__(self, rt: AgentRuntime, counted: Mapping[str, int]) -> None:
        self.rt = rt
        self.reported = dict(counted)

    def report(
        self, totals: Mapping[str, int], message: str, *, level: str = "info", artifacts: Sequence[str] = ()
    ) -> None:
        delta = {k: v - self.reported.get(k, 0) for k, v in totals.items() if v > self.reported.get(k, 0)}
        for name, value in delta.items():
            self.reported[name] = self.reported.get(name, 0) + value
        self.rt.progress(message, level=level, counters=delta, artifacts=artifacts)


def _unique_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows in id order, the first of each id kept; rows without a string id sort last."""
    seen: dict[str, dict[str, Any]] = {}
    for number, row in enumerate(rows, start=1):
        key = row["id"] if isinstance(row.get("id"), str) else f"~line {number}"
        seen.setdefault(key, row)
    return [seen[key] for key in sorted(seen)]


def _earlier_clean(run_dir: Path, round_no: int) -> DedupIndex:
    index = DedupIndex()
    for earlier in range(round_no):
        for row in read_jsonl_skipping_bad(RoundFiles.of(run_dir, earlier).clean):
            key, output = row.get("id"), row.get("output")
            if isinstance(key, str) and isinstance(output, str) and index.find(output) is None:
                index.add(key, output)
    return index


def _summary(totals: Mapping[str, int], checked: int, count: int) -> str:
    return (
        f"{checked}/{count} checked: {totals.get('validated_ok', 0)} ok, "
        f"{totals.get('rejected_schema', 0)} schema, {totals.get('rejected_secret', 0)} secret, "
        f"{totals.get('rejected_dedup', 0)} duplicate"
    )


def _classify(
    rt: AgentRuntime, rows: list[dict[str, Any]], reporter: _Reporter
) -> tuple[list[dict[str, Any]], Counter[str], dict[str, list[str]]]:
    redactor = default_redactor()
    index = _earlier_clean(rt.run_dir, rt.round)
    totals: Counter[str] = Counter()
    examples: dict[str, list[str]] = {reason: [] for reason in REJECTIONS}
    clean: list[dict[str, Any]] = []
    for start in range(0, len(rows), _CHUNK):
        rt.checkpoint()
        for row in rows[start : start + _CHUNK]:
            name = str(row.get("id", "?"))
            reason, why = "validated_ok", ""
            kinds = secret_kinds(row, redactor)
            if kinds:
                reason, why = "rejected_secret", ", ".join(sorted(kinds))
            elif (problem := schema_problem(row, rt.config.SEQ_LEN)) is not None:
                reason, why = "rejected_schema", problem
            elif (duplicate := index.check_and_add(name, row["output"])) is not None:
                near = f", similarity {duplicate.similarity:.2f}" if duplicate.kind == "near" else ""
                reason, why = "rejected_dedup", f"{duplicate.kind} duplicate of {duplicate.of}{near}"
            totals[reason] += 1
            if reason == "validated_ok":
                clean.append(row)
            elif len(examples[reason]) < _EXAMPLES:
                examples[reason].append(f"{name}: {why}")
        checked = min(start + _CHUNK, len(rows))
        reporter.report(totals, f"validate round {rt.round}: {_summary(totals, checked, len(rows))}")
    return clean, totals, examples


def _last_line(output: str) -> str:
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    return lines[-1][:120] if lines else ""


def _gate(
    rt: AgentRuntime, clean: list[dict[str, Any]], reporter: _Reporter, totals: Counter[str]
) -> list[dict[str, Any]]:
    """Run each clean sample's code with its tests in the sandbox; the samples that pass."""
    config = rt.config
    try:
        why_not_isolated = network_isolation_message(config.SANDBOX)
    except (OSError, RuntimeError) as exc:
        raise FatalStageError(f"the unit-test sandbox cannot start: {exc}") from None
    if why_not_isolated:
        rt.progress(
            f"unit-test gate: generated code can reach the network here: {why_not_isolated}", level="warn"
        )
    limits = SandboxLimits(
        timeout_s=config.SANDBOX_TIMEOUT_S,
        cpu_s=max(1, math.ceil(config.SANDBOX_TIMEOUT_S)),
        memory_mb=config.SANDBOX_MEMORY_MB,
    )
    workers = usable_cpus()
    batch = max(8, 4 * workers)
    passed: list[dict[str, Any]] = []
    failures: list[str] = []
    for start in range(0, len(clean), batch):
        rt.checkpoint()
        chunk = clean[start : start + batch]
        try:
            results = run_many(
                [(row["output"], row["tests"]) for row in chunk],
                limits,
                workers=workers,
                sandbox=config.SANDBOX,
            )
        except (OSError, RuntimeError) as exc:
            raise FatalStageError(f"the unit-test sandbox cannot start: {exc}") from None
        for row, result in zip(chunk, results, strict=True):
            if result.passed:
                passed.append(row)
                totals["test_pass"] += 1
                continue
            totals["test_fail"] += 1
            if len(failures) < _EXAMPLES:
                detail = _last_line(result.output)
                failures.append(f"{row['id']}: {result.outcome}" + (f" ({detail})" if detail else ""))
        done = min(start + batch, len(clean))
        examples = f"; failed: {'; '.join(failures)}" if failures else ""
        reporter.report(
            totals,
            f"unit-test gate round {rt.round}: {done}/{len(clean)} run, {totals['test_pass']} passed, "
            f"{totals['test_fail']} failed{examples}",
            level="warn" if failures else "info",
        )
    return passed


def main(rt: AgentRuntime) -> None:
    """Validate this round's raw samples (see the module docstring)."""
    config = rt.config
    files = RoundFiles.of(rt.run_dir, rt.round).ensure()
    reporter = _Reporter(rt, already_counted(rt.run_dir, "validate", rt.round).counters)
    if not files.raw.exists():
        rt.progress(f"validate round {rt.round}: no raw.jsonl (generate wrote no sample)", level="warn")
    rows = _unique_rows(read_jsonl_skipping_bad(files.raw))
    clean, totals, examples = _classify(rt, rows, reporter)
    write_jsonl(files.clean, clean)
    for reason in REJECTIONS:
        if totals[reason]:
            rt.progress(f"{reason}: {totals[reason]} (e.g. {'; '.join(examples[reason])})", level="warn")
    artifacts = [files.clean]
    survivors = clean
    if config.RUN_UNIT_TESTS == "1":
        survivors = _gate(rt, clean, reporter, totals)
        write_jsonl(files.tested, survivors)
        artifacts.append(files.tested)
    try:
        heldout = set(read_heldout(rt.run_dir) or ())
    except HeldoutError as exc:
        raise FatalStageError(str(exc)) from None
    train, answered = split_heldout(survivors, heldout)
    fresh = any(task_id_of(row) in heldout for row in rows)
    if config.TASK_SOURCE == "bank" and heldout and (fresh or not heldout_files(rt.run_dir).val.exists()):
        # Held-out bank tasks are scored against their verified reference solutions, whatever the teacher did.
        answered, fresh = list(with_references(rt.run_dir, answered, rt.round)), True
    if fresh:
        # The round that asked the teacher for the held-out tasks fixes their validation rows for the run.
        write_jsonl(heldout_files(rt.run_dir).ensure().val, answered)
        artifacts.append(heldout_files(rt.run_dir).val)
    val = heldout_rows(rt.run_dir)
    write_jsonl(files.train, train)
    write_jsonl(files.val, val)
    artifacts += [files.train, files.val]
    reporter.report(
        totals,
        f"validate round {rt.round} complete: {_summary(totals, len(rows), len(rows))}"
        + (
            f"; tests {totals['test_pass']} passed, {totals['test_fail']} failed"
            if config.RUN_UNIT_TESTS == "1"
            else ""
        )
        + f"; {len(train)} train / {len(val)} held-out val rows",
        artifacts=[rt.relative(path) for path in artifacts],
    )


if __name__ == "__main__":
    sys.exit(run_stage(main))
