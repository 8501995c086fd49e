"""The held-out task set: tasks fixed for the whole run, never trained on, answered by the teacher once.

When the task pool is first known (the bank or a task file at the first round; self-instruct after its
first proposals), :func:`choose_heldout` draws ``ceil(VAL_RATIO * pool)`` task ids with ``SEED`` (at least
one when VAL_RATIO > 0, never the whole pool) and :func:`fix_heldout` records them in
``runs/<id>/heldout.json`` as a JSON list of task ids; every later call, resumes included, reads that
file back instead of drawing again, so the set never changes between rounds.

Generate asks the teacher for the held-out tasks once, in the round that fixed the set; validate sends
their clean answers to ``data/heldout/val.jsonl`` (the validation rows of every round) and never to a
``train.jsonl``; eval scores base and adapter on them. A task of the shipped bank has a verified
reference solution (``data/solutions.jsonl``, checked against the bank's tests): its validation row
carries that solution (:func:`reference_rows`) rather than the teacher's answer, so that every held-out
bank task has a row, however weak the teacher, and val loss is measured against known-good code. The
teacher is not asked for those (:func:`answered_by_reference`): its answer would be paid for and dropped.

:func:`humaneval_overlaps` finds tasks that near-duplicate a HumanEval problem (same function name and
arity, or a MinHash-similar normalised description), so that they are never trained on while HumanEval
is part of the evaluation.
"""

from __future__ import annotations

import json
import math
import random
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path

from datasketch import MinHash

from heidi_engine.agents.dataset.humaneval import HumanEvalUnavailable, load_problems
from heidi_engine.agents.dataset.samples import Sample, SampleMetadata, read_jsonl_skipping_bad, sample_id
from heidi_engine.agents.dataset.tasks import Task, instruction_text, load_bank
from heidi_engine.agents.layout import RoundFiles, heldout_files, heldout_ids_file
from heidi_engine.bus.storage import atomic_write_json

__all__ = [
    "HeldoutError",
    "answered_by_reference",
    "choose_heldout",
    "fix_heldout",
    "heldout_count",
    "heldout_rows",
    "humaneval_overlaps",
    "read_heldout",
    "reference_rows",
    "reference_solutions",
    "split_pool",
    "task_id_of",
    "with_references",
    "without_humaneval",
]

REFERENCE_MODEL = "reference"  # metadata.teacher_model of a row that carries a bank task's reference
# Jaccard similarity of word 3-shingles above which two descriptions say the same thing.
DESCRIPTION_SIMILARITY = 0.5
_PERMUTATIONS = 128
_WORD = re.compile(r"[a-z0-9]+")
_DOCSTRING = re.compile(r'("""|\'\'\')(.*?)\1', re.DOTALL)
_EXAMPLE = re.compile(r"^\s*(>>>|\w+\(.*\)\s*(==|➞|->|=>)).*$", re.MULTILINE)
_SIGNATURE = re.compile(r"^\s*def\s+(\w+)\s*\((.*?)\)", re.MULTILINE | re.DOTALL)


class HeldoutError(Exception):
    """``heldout.json`` cannot be read or is not a JSON list of task ids; the message says which."""


def heldout_count(pool_size: int, val_ratio: float) -> int:
    """How many of ``pool_size`` tasks are held out: ``ceil(val_ratio * pool_size)``, at least one when
    ``val_ratio > 0``, and at most ``pool_size - 1`` so that something is left to train on."""
    if not 0.0 <= val_ratio <= 1.0:
        raise ValueError(f"val_ratio must be in [0, 1], got {val_ratio!r}")
    if pool_size < 0:
        raise ValueError(f"pool_size must be >= 0, got {pool_size}")
    if val_ratio == 0 or pool_size < 2:
        return 0
    return min(pool_size - 1, max(1, math.ceil(val_ratio * pool_size - 1e-9)))


def choose_heldout(task_ids: Iterable[str], val_ratio: float, seed: int) -> list[str]:
    """The held-out task ids of a pool: its distinct ids, sorted, shuffled with ``seed``; the first
    :func:`heldout_count` of them, in that order. The same arguments give the same list."""
    pool = sorted(set(task_ids))
    random.Random(f"heldout-{seed}").shuffle(pool)
    return pool[: heldout_count(len(pool), val_ratio)]


def read_heldout(run_dir: Path) -> list[str] | None:
    """The run's recorded held-out ids, or None when none are recorded yet."""
    path = heldout_ids_file(run_dir)
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise HeldoutError(f"{path}: cannot read the held-out task list: {exc}") from None
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise HeldoutError(f"{path}: expected a JSON list of task ids, got {type(value).__name__}")
    return value


def fix_heldout(run_dir: Path, task_ids: Iterable[str], val_ratio: float, seed: int) -> list[str]:
    """The run's held-out ids: those already recorded, else a fresh draw, recorded now."""
    recorded = read_heldout(run_dir)
    if recorded is not None:
        return recorded
    chosen = choose_heldout(task_ids, val_ratio, seed)
    atomic_write_json(heldout_ids_file(run_dir), chosen)
    return chosen


def heldout_rows(run_dir: Path) -> list[dict[str, object]]:
    """The validated held-out answers (``data/heldout/val.jsonl``), empty when there are none yet."""
    return read_jsonl_skipping_bad(heldout_files(run_dir).val)


def task_id_of(row: Mapping[str, object]) -> str | None:
    """The task id a sample answers (``metadata.task_id``), or None when it has none."""
    metadata = row.get("metadata")
    task_id = metadata.get("task_id") if isinstance(metadata, Mapping) else None
    return task_id if isinstance(task_id, str) else None


def _description(text: str) -> str:
    """A task's prose without examples, lowercased words only."""
    docstring = _DOCSTRING.search(text)
    prose = docstring.group(2) if docstring else text
    prose = _EXAMPLE.sub(" ", prose)
    return " ".join(_WORD.findall(prose.lower()))


def _minhash(text: str) -> MinHash:
    words = text.split()
    grams = {" ".join(words[i : i + 3]) for i in range(max(1, len(words) - 2))}
    minhash = MinHash(num_perm=_PERMUTATIONS, seed=1)
    minhash.update_batch([gram.encode("utf-8") for gram in sorted(grams)])
    return minhash


def _signature(code: str) -> tuple[str, int] | None:
    """``(function name, parameter count)`` of the first ``def`` in ``code``."""
    match = _SIGNATURE.search(code)
    if match is None:
        return None
    params = [p for p in match.group(2).split(",") if p.strip() and p.strip() not in ("*", "/")]
    return match.group(1).lower(), len(params)


def humaneval_overlaps(
    tasks: Sequence[tuple[str, str, str]], problems: Sequence[tuple[str, str]]
) -> dict[str, str]:
    """``{task_id: HumanEval task_id}`` for each task ``(task_id, signature, description)`` that
    near-duplicates a problem ``(task_id, prompt)``: the same function name and arity, or descriptions
    whose word-shingle similarity is at least ``DESCRIPTION_SIMILARITY``."""
    signatures: dict[tuple[str, int], str] = {}
    hashes: list[tuple[str, MinHash]] = []
    for problem_id, prompt in problems:
        head = _signature(prompt)
        if head is not None:
            signatures.setdefault(head, problem_id)
        hashes.append((problem_id, _minhash(_description(prompt))))
    found: dict[str, str] = {}
    for task_id, signature, description in tasks:
        head = _signature(signature)
        if head is not None and head in signatures:
            found[task_id] = signatures[head]
            continue
        mine = _minhash(_description(description))
        for problem_id, theirs in hashes:
            if mine.jaccard(theirs) >= DESCRIPTION_SIMILARITY:
                found[task_id] = problem_id
                break
    return found


def without_humaneval(pool: Sequence[Task]) -> tuple[list[Task], dict[str, str]]:
    """``pool`` less its HumanEval lookalikes, and those (:func:`humaneval_overlaps`); the pool as it is
    when the HumanEval data cannot be read (eval then skips HumanEval and says so)."""
    try:
        problems = load_problems()
    except HumanEvalUnavailable:
        return list(pool), {}
    overlaps = humaneval_overlaps(
        [(task.task_id, task.signature, task.description) for task in pool],
        [(problem.task_id, problem.prompt) for problem in problems],
    )
    return [task for task in pool if task.task_id not in overlaps], overlaps


def _answered_earlier(run_dir: Path, round_no: int, task_ids: set[str]) -> bool:
    """Whether a round before ``round_no`` already asked the teacher for one of ``task_ids``."""
    for earlier in range(round_no):
        files = RoundFiles.of(run_dir, earlier)
        for row in read_jsonl_skipping_bad(files.raw) + read_jsonl_skipping_bad(files.failed):
            if (task_id_of(row) or row.get("task_id")) in task_ids:
                return True
    return False


def split_pool(
    run_dir: Path,
    round_no: int,
    pool: Sequence[Task],
    val_ratio: float,
    seed: int,
    *,
    answered: Collection[str] = frozenset(),
) -> tuple[list[Task], list[Task]]:
    """``(training pool, held-out tasks to answer in this round)``.

    The held-out set is fixed on the first call of the run (:func:`fix_heldout`); its tasks are to be
    answered once, in the first round that asks, and never again; those in ``answered`` (a reference
    answers them, :func:`answered_by_reference`) never.
    """
    heldout = fix_heldout(run_dir, [task.task_id for task in pool], val_ratio, seed)
    held = set(heldout)
    train = [task for task in pool if task.task_id not in held]
    if not held or _answered_earlier(run_dir, round_no, held):
        return train, []
    by_id = {task.task_id: task for task in pool}
    return train, [by_id[task_id] for task_id in heldout if task_id in by_id and task_id not in answered]


def answered_by_reference(task_source: str) -> frozenset[str]:
    """The ids of the tasks whose held-out row is their verified reference solution, never the teacher's
    answer (:func:`with_references`): with ``TASK_SOURCE`` "bank", every bank task that has one; with
    any other source, none (a task file's ``bank/...`` id may name another task)."""
    if task_source != "bank":
        return frozenset()
    return frozenset(reference_solutions().keys() & {task.task_id for task in load_bank()})


def reference_solutions() -> dict[str, str]:
    """``{task_id: code}``: the verified reference solution of every task of the shipped bank."""
    data = resources.files("heidi_engine.agents").joinpath("data/solutions.jsonl")
    found: dict[str, str] = {}
    for line in data.read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            found[str(row["task_id"])] = str(row["solution"])
    return found


def reference_rows(task_ids: Sequence[str], round_no: int, ts: str) -> list[dict[str, object]]:
    """Validation rows for those of ``task_ids`` that are tasks of the shipped bank: each row is the task's
    instruction, tests and verified reference solution, like a validated sample (``metadata.teacher_model``
    is ``"reference"``). Ids that are not bank tasks get no row. Ids ``r<round>-9xxxx`` keep them apart
    from the round's samples."""
    bank = {task.task_id: task for task in load_bank()}
    solutions = reference_solutions()
    rows: list[dict[str, object]] = []
    for task_id in task_ids:
        task = bank.get(task_id)
        if task is None or task_id not in solutions:
            continue
        sample = Sample(
            id=sample_id(round_no, 90000 + len(rows)),
            instruction=instruction_text(task),
            input="",
            output=solutions[task_id].strip("\n"),
            tests=task.tests,
            metadata=SampleMetadata(
                task_id=task_id,
                entry_point=task.entry_point,
                round=round_no,
                teacher_model=REFERENCE_MODEL,
                usage={},
                ts=ts,
            ),
        )
        rows.append(sample.record())
    return rows


def with_references(
    run_dir: Path, answered: Sequence[Mapping[str, object]], round_no: int
) -> list[Mapping[str, object]]:
    """The validation rows of a run on the shipped bank: the reference row of every held-out bank task
    (:func:`reference_rows`, stamped with the time the reference solutions were last changed, so a rerun
    writes the same bytes), then the teacher's ``answered`` rows for held-out tasks without one."""
    references = reference_rows(read_heldout(run_dir) or [], round_no, _solutions_changed())
    covered = {task_id_of(row) for row in references}
    return [*references, *(row for row in answered if task_id_of(row) not in covered)]


def _solutions_changed() -> str:
    """When ``data/solutions.jsonl`` was last changed, as ISO 8601 UTC."""
    data = resources.files("heidi_engine.agents").joinpath("data/solutions.jsonl")
    try:
        changed = datetime.fromtimestamp(Path(str(data)).stat().st_mtime, tz=timezone.utc)
    except OSError:  # inside a zip: no modification time to read
        changed = datetime.fromtimestamp(0, tz=timezone.utc)
    return changed.isoformat(timespec="milliseconds").replace("+00:00", "Z")
