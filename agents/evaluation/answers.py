"""A generated answer of the eval stage: how long it may grow, when it is complete, and what its code is.

:func:`function_complete` is the decoder's stop rule (:func:`answer_rule`): an answer stops as soon as
its function is complete, not at :data:`MAX_NEW_TOKENS`; :func:`answer_code` takes the code out of it.
"""

from __future__ import annotations

import re
import textwrap

from heidi_engine.agents.dataset.tasks import extract_code
from heidi_engine.agents.decoder import StopRule

__all__ = ["MAX_NEW_TOKENS", "answer_code", "answer_rule", "function_complete"]

MAX_NEW_TOKENS = 256

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
    off by the token limit) :func:`~heidi_engine.agents.dataset.tasks.extract_code`'s reading of it."""
    span = _code_span(text)
    if span is None and "```" not in text:
        # Unfenced and cut off: a line of prose at the end closes it like any other.
        span = _code_span(text + "\n.\n")
    if span is None:
        return extract_code(text)
    return textwrap.dedent(text[span[0] : span[1]]).strip()


def answer_rule() -> StopRule:
    """The stop rule of a generated answer: :func:`function_complete`, which can only turn true on a
    token holding a newline or a backtick (see :mod:`decoder`)."""
    return function_complete, "\n`"
