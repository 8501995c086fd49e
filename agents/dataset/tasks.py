"""Task sources for the generate stage: the shipped bank, a user's JSONL file, or teacher-proposed tasks.

A task is a Python function to write: its signature, a one-paragraph description and unit tests that
call it. ``TASK_SOURCE`` picks the pool ("bank", "file:<path>" or "self-instruct");
:func:`tasks_for_round` draws each round's tasks from it, and :func:`build_solution_messages` /
:func:`extract_code` turn a task into a teacher prompt and the teacher's reply back into code.
"""

from __future__ import annotations

import ast
import json
import keyword
import os
import random
import re
import textwrap
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

__all__ = [
    "SELF_INSTRUCT_PROMPT",
    "SOLUTION_SYSTEM_PROMPT",
    "Task",
    "TaskSourceError",
    "build_self_instruct_messages",
    "build_solution_messages",
    "extract_code",
    "instruction_text",
    "load_bank",
    "load_jsonl",
    "parse_proposed_task",
    "task_pool",
    "tasks_for_round",
]

Difficulty = Literal["easy", "medium", "hard"]


class TaskSourceError(Exception):
    """A task file or a proposed task is invalid; the message names the source, the line and the problem."""


class Task(BaseModel):
    """One programming task: write ``signature`` so that ``tests`` (plain asserts) pass."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    task_id: str = Field(min_length=1, max_length=120, pattern=r"^[A-Za-z0-9_./:-]+$")
    entry_point: str
    signature: str
    description: str = Field(min_length=1, max_length=4000)
    tests: str = Field(min_length=1)
    difficulty: Difficulty = "medium"
    tags: list[str] = Field(default_factory=list)

    @field_validator("entry_point")
    @classmethod
    def _entry_point_is_identifier(cls, value: str) -> str:
        if not value.isidentifier() or keyword.iskeyword(value):
            raise ValueError(f"{value!r} is not a valid Python function name")
        return value

    @field_validator("description", "tests")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value

    @field_validator("tests")
    @classmethod
    def _tests_compile(cls, value: str) -> str:
        try:
            compile(value, "<tests>", "exec", dont_inherit=True)
        except SyntaxError as exc:
            raise ValueError(f"not valid Python: {exc.msg} (line {exc.lineno})") from None
        return value

    @model_validator(mode="after")
    def _signature_and_tests_name_the_entry_point(self) -> Task:
        prefix = f"def {self.entry_point}("
        if not self.signature.startswith(prefix):
            raise ValueError(f"signature must start with {prefix!r}, got {self.signature[:60]!r}")
        try:
            # A bodyless header does not parse, so give it one; this rejects "def f(x:" and friends.
            compile(self.signature + "\n    pass\n", "<signature>", "exec", dont_inherit=True)
        except SyntaxError as exc:
            raise ValueError(f"signature is not a valid function header: {exc.msg}") from None
        if not re.search(rf"\b{re.escape(self.entry_point)}\b", self.tests):
            raise ValueError(f"tests never mention the entry point {self.entry_point!r}")
        return self


def _describe(exc: ValidationError) -> str:
    """One line per pydantic error, naming the field: "signature: must start with …"."""
    parts = []
    for err in exc.errors(include_url=False):
        where = ".".join(str(p) for p in err["loc"]) or "task"
        parts.append(f"{where}: {err['msg'].removeprefix('Value error, ')}")
    return "; ".join(parts)


def _parse_lines(text: str, source: str) -> list[Task]:
    """Parse JSONL task text, collecting every problem (with its line number) before raising."""
    tasks: list[Task] = []
    first_seen: dict[str, int] = {}
    problems: list[str] = []
    # split("\n"), not splitlines(): JSON strings may hold U+2028, which splitlines() breaks on.
    for line_no, raw in enumerate(text.split("\n"), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(f"{source}:{line_no}: invalid JSON: {exc.msg} (column {exc.colno})")
            continue
        if not isinstance(obj, dict):
            problems.append(f"{source}:{line_no}: expected a JSON object, got {type(obj).__name__}")
            continue
        try:
            task = Task.model_validate(obj)
        except ValidationError as exc:
            problems.append(f"{source}:{line_no}: invalid task: {_describe(exc)}")
            continue
        if task.task_id in first_seen:
            problems.append(
                f"{source}:{line_no}: duplicate task_id {task.task_id!r} "
                f"(first defined on line {first_seen[task.task_id]})"
            )
            continue
        first_seen[task.task_id] = line_no
        tasks.append(task)
    if problems:
        raise TaskSourceError(f"{source}: {len(problems)} problem(s):\n" + "\n".join(problems))
    if not tasks:
        raise TaskSourceError(f"{source}: contains no tasks")
    return tasks


def load_bank() -> list[Task]:
    """The task bank shipped with the package (``heidi_engine.agents`` data ``data/tasks.jsonl``)."""
    data = resources.files("heidi_engine.agents").joinpath("data/tasks.jsonl")
    return _parse_lines(data.read_text(encoding="utf-8"), "heidi_engine.agents/data/tasks.jsonl")


def load_jsonl(path: str | os.PathLike[str]) -> list[Task]:
    """Load a user's task file: one task object per line; blank lines and ``#`` lines are skipped.

    Every bad line is reported at once (``<path>:<line>: <problem>``), duplicate task_ids included.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise TaskSourceError(f"{os.fspath(path)}: cannot read task file: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise TaskSourceError(f"{os.fspath(path)}: not UTF-8 text (byte {exc.start})") from None
    return _parse_lines(text, os.fspath(path))


def task_pool(task_source: str, difficulty: str, home: str | None) -> list[Task]:
    """The tasks ``TASK_SOURCE`` names (self-instruct's examples: the bank), those of ``TASK_DIFFICULTY``
    (``"any"``, or difficulties separated by commas); a relative ``file:`` path is resolved against the
    home. Raises :class:`TaskSourceError` naming the source, or when no task is left."""
    if task_source in ("bank", "self-instruct"):
        pool = load_bank()
    elif task_source.startswith("file:"):
        path = Path(task_source[len("file:") :].strip()).expanduser()
        pool = load_jsonl(path if path.is_absolute() else Path(home or os.getcwd()) / path)
    else:
        raise TaskSourceError(
            f'TASK_SOURCE {task_source!r}: expected "bank", "self-instruct" or "file:<path>"'
        )
    if difficulty != "any":
        wanted = set(difficulty.split(","))
        pool = [task for task in pool if task.difficulty in wanted]
        if not pool:
            raise TaskSourceError(f"no task of difficulty {difficulty} in {task_source}")
    return pool


def tasks_for_round(tasks: Sequence[Task], round_no: int, count: int, seed: int) -> list[Task]:
    """The ``count`` tasks for round ``round_no``, the same for the same arguments on every run.

    The pool is shuffled once with ``seed``; round r takes the window that starts at ``r * count`` in
    that order, wrapping around, so consecutive rounds walk the whole pool before any task comes back.
    When ``count`` exceeds the pool, tasks repeat within the round; the caller makes the sample ids of
    repeats unique (for instance with a ``#k`` suffix).
    """
    if round_no < 0:
        raise ValueError(f"round_no must be >= 0, got {round_no}")
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    if count and not tasks:
        raise TaskSourceError("the task pool is empty: there is nothing to generate from")
    order = list(tasks)
    random.Random(seed).shuffle(order)
    start = round_no * count
    return [order[(start + i) % len(order)] for i in range(count)]


SELF_INSTRUCT_SYSTEM_PROMPT = "You write small, self-contained Python programming exercises with unit tests."

SELF_INSTRUCT_PROMPT = """\
Propose ONE new Python programming task, different from the examples below. Topic hint: {topic}.

Examples, one JSON object per line:
{examples}

Reply with exactly one JSON object, with no other text, and these keys:
- "entry_point": the function name (snake_case).
- "signature": one line, "def <entry_point>(<typed parameters>) -> <return type>:".
- "description": one clear paragraph saying what the function returns, including edge cases.
- "tests": 3 to 6 lines of "assert <entry_point>(...) == ..." separated by "\\n"; standard library \
only, calling nothing but the entry point.
- "difficulty": "easy", "medium" or "hard".
- "tags": a list of short topic words.
(Request {index} of round {round_no}.)"""

_TOPICS = (
    "strings",
    "lists",
    "dictionaries",
    "arithmetic",
    "parsing text",
    "recursion",
    "sorting",
    "two pointers",
    "intervals",
    "stacks",
    "grids",
    "counting",
)

_EXAMPLE_FIELDS = ("entry_point", "signature", "description", "tests", "difficulty", "tags")


def build_self_instruct_messages(examples: Sequence[Task], round_no: int, index: int) -> list[dict[str, str]]:
    """Chat messages asking the teacher for one new task modelled on ``examples`` (usually three).

    The topic hint rotates with ``round_no`` and ``index`` so that repeated requests differ.
    """
    if not examples:
        raise ValueError("self-instruct needs at least one example task")
    lines = [json.dumps(ex.model_dump(include=set(_EXAMPLE_FIELDS)), ensure_ascii=False) for ex in examples]
    topic = _TOPICS[(round_no * 7 + index) % len(_TOPICS)]
    user = SELF_INSTRUCT_PROMPT.format(topic=topic, examples="\n".join(lines), index=index, round_no=round_no)
    return [
        {"role": "system", "content": SELF_INSTRUCT_SYSTEM_PROMPT},
        {"role": "user", "content": user},
    ]


def _json_objects(reply: str) -> list[dict[str, Any]]:
    """JSON objects found in ``reply``: fenced blocks first, then any ``{`` that starts one."""
    candidates = [body for lang, body in _fenced_blocks(reply) if lang in ("", "json")]
    candidates.append(reply)
    decoder = json.JSONDecoder()
    found: list[dict[str, Any]] = []
    for text in candidates:
        for match in re.finditer(r"\{", text):
            try:
                obj, _ = decoder.raw_decode(text, match.start())
            except json.JSONDecodeError:
                continue
            if isinstance(obj, dict):
                found.append(obj)
                break
    return found


def parse_proposed_task(reply: str, task_id: str) -> Task:
    """The task the teacher proposed in ``reply``, given the id ``task_id``.

    Tolerates leading prose and ```json fences; a "task_id" in the reply is ignored, and tests given
    as a list of lines are joined. Raises :class:`TaskSourceError` saying why the reply is unusable.
    """
    objects = _json_objects(reply)
    if not objects:
        raise TaskSourceError(f"proposed task {task_id}: no JSON object found in the reply")
    fields = dict(objects[0])
    fields.pop("task_id", None)
    tests = fields.get("tests")
    if isinstance(tests, list) and all(isinstance(t, str) for t in tests):
        fields["tests"] = "\n".join(tests)
    try:
        task = Task.model_validate({**fields, "task_id": task_id})
    except ValidationError as exc:
        raise TaskSourceError(f"proposed task {task_id}: {_describe(exc)}") from None
    if not any(isinstance(node, ast.Assert) for node in ast.walk(ast.parse(task.tests))):
        raise TaskSourceError(f"proposed task {task_id}: tests contain no assert statement")
    return task


SOLUTION_SYSTEM_PROMPT = (
    "You are an expert Python programmer. Reply with only the complete function in one ```python code block."
)


def instruction_text(task: Task) -> str:
    """The instruction stored with a training sample; train and eval prompts both use it."""
    return f"{task.description.strip()}\n\nWrite this function:\n{task.signature.strip()}"


def build_solution_messages(task: Task, *, prefill: bool = False) -> list[dict[str, str]]:
    """Chat messages asking the teacher to implement ``task``. With ``prefill`` (an in-process teacher) the
    reply is started with the code fence and signature, which keeps a small model writing the function
    instead of prose about it."""
    messages = [
        {"role": "system", "content": SOLUTION_SYSTEM_PROMPT},
        {"role": "user", "content": instruction_text(task)},
    ]
    if prefill:
        messages.append({"role": "assistant", "content": f"```python\n{task.signature}\n    "})
    return messages


_FENCE_OPEN = re.compile(r"```[ \t]*([A-Za-z0-9_+.-]*)[ \t]*\r?\n")
_PYTHON_LANGS = frozenset({"python", "python3", "py"})


def _fenced_blocks(reply: str) -> list[tuple[str, str]]:
    """(language, body) for each ``` block in order; an unclosed last block runs to the end."""
    blocks: list[tuple[str, str]] = []
    pos = 0
    while (match := _FENCE_OPEN.search(reply, pos)) is not None:
        end = reply.find("```", match.end())
        lang = match.group(1).lower()
        if end == -1:
            # Replies cut off by the token limit often lose their closing fence; keep the code.
            blocks.append((lang, reply[match.end() :]))
            break
        blocks.append((lang, reply[match.end() : end]))
        pos = end + 3
    return blocks


def extract_code(reply: str) -> str:
    """The code in ``reply``: the first ```python block, else the first bare ``` block, else all of it."""
    blocks = _fenced_blocks(reply)
    for wanted in (_PYTHON_LANGS, frozenset({""})):
        for lang, body in blocks:
            if lang in wanted:
                return textwrap.dedent(body).strip()
    return reply.strip()
