"""The YAML side of the configuration: reading a config file strictly, and editing it in place.

Kept apart from the schema (``config.py``) because it is text mechanics only: it knows YAML and files,
nothing about fields or rules. Both directions use ruamel.yaml with YAML 1.2, so ``2e-4`` is a number
and ``yes`` is text. Reading reports what a loader would silently accept (duplicate keys, non-string
keys) with their lines; editing is a round trip that changes only the values asked for, keeping every
comment, blank line and the file's line endings, and it writes through a temp file and ``os.replace``.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import re
import stat
from collections.abc import Mapping
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap
from ruamel.yaml.error import YAMLError
from ruamel.yaml.nodes import MappingNode, ScalarNode, SequenceNode
from ruamel.yaml.scalarstring import DoubleQuotedScalarString

from heidi_engine.bus.storage import FILE_MODE, atomic_write_bytes

_PLAIN = re.compile(r"[A-Za-z0-9_./+-][A-Za-z0-9_./:@+-]*")
_STR_TAG = "tag:yaml.org,2002:str"
_WIDE = 1 << 30  # never fold a long value over several lines


def _round_trip() -> YAML:
    """A YAML 1.2 round-trip loader/dumper that keeps comments and the quoting of scalars."""
    rt = YAML(typ="rt", pure=True)
    rt.preserve_quotes = True
    rt.width = _WIDE
    return rt


def _plain_load(text: str) -> Any:
    """``text`` as plain Python values (YAML 1.2; a repeated key keeps its last value)."""
    safe = YAML(typ="safe", pure=True)
    safe.allow_duplicate_keys = True
    return safe.load(text)


def _describe(exc: YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"invalid YAML{where}: {getattr(exc, 'problem', None) or exc}"


def read_mapping(path: str | os.PathLike[str]) -> tuple[dict[str, object], list[str]]:
    """The top-level mapping of a YAML file (string keys only) and one line per problem found in it."""
    source = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except FileNotFoundError:
        return {}, [f"{source}: file not found"]
    except UnicodeDecodeError as exc:
        return {}, [f"{source}: not UTF-8 text (bad byte at offset {exc.start})"]
    except OSError as exc:
        return {}, [f"{source}: cannot read: {exc.strerror or exc}"]
    try:
        # The node tree carries the line of every key, for duplicate and non-string keys.
        root = YAML(typ="rt", pure=True).compose(text)
        data = _plain_load(text)
    except YAMLError as exc:
        return {}, [f"{source}: {_describe(exc)}"]
    if root is None:
        return {}, []  # an empty file, or only comments: nothing set
    if not isinstance(root, MappingNode) or not isinstance(data, dict):
        found = {SequenceNode: "a list", ScalarNode: "a single value"}.get(type(root), "other")
        return {}, [f"{source}: expected a mapping of KEY: value lines, found {found}"]
    problems: list[str] = []
    first_line: dict[str, int] = {}
    for key_node, _ in root.value:
        line = key_node.start_mark.line + 1
        if str(key_node.tag) != _STR_TAG or not isinstance(key_node.value, str):
            problems.append(f"{source}: line {line}: key {str(key_node.value)[:60]!r} is not a field name")
        elif key_node.value in first_line:
            first = first_line[key_node.value]
            problems.append(f"{source}: line {line}: {key_node.value}: duplicate key (first on line {first})")
        else:
            first_line[key_node.value] = line
    return {k: v for k, v in data.items() if isinstance(k, str)}, problems


def yaml_scalar(value: object) -> str:
    """A YAML 1.2 scalar that loads back as exactly ``value`` (the empty string for None)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isnan(value):
            return ".nan"
        if math.isinf(value):
            return ".inf" if value > 0 else "-.inf"
        return repr(value)
    if not isinstance(value, str):
        return str(value)
    if _PLAIN.fullmatch(value):
        with contextlib.suppress(YAMLError):
            if _plain_load(value) == value:  # not "1", "true", "null", "1.0"...
                return value
    # ruamel's double-quoted style escapes whatever YAML could not carry raw (breaks, controls).
    out = io.StringIO()
    _round_trip().dump({"k": DoubleQuotedScalarString(value)}, out)
    return out.getvalue()[len("k: ") :].rstrip("\n")


def _styled(value: object) -> object:
    """``value`` as the round-trip dumper should write it: text YAML would retype goes in double quotes."""
    if isinstance(value, str) and yaml_scalar(value).startswith('"'):
        return DoubleQuotedScalarString(value)
    return value


def edit_text(text: str, values: Mapping[str, object]) -> str:
    """``text`` with each top-level key of ``values`` set to that value; missing keys appended.

    A round trip through ruamel.yaml: comments (in their columns), blank lines, key order and the other
    values stay as they were, and so do the line endings. Raises ``YAMLError`` when ``text`` is not YAML,
    and ``ValueError`` when it is not a mapping.
    """
    newline = "\r\n" if "\r\n" in text else "\n"
    rt = _round_trip()
    data = rt.load(text.replace("\r\n", "\n")) if text.strip() else None
    if data is None:
        data = CommentedMap()
    if not isinstance(data, CommentedMap):
        raise ValueError("not a mapping of KEY: value lines")
    for key, value in values.items():
        data[key] = _styled(value)
    out = io.StringIO()
    rt.dump(data, out)
    edited = out.getvalue()
    return edited.replace("\n", newline) if newline != "\n" else edited


def update_file(path: str | os.PathLike[str], values: Mapping[str, object]) -> None:
    """Set ``values`` in the YAML file at ``path`` in place (created 0600 if missing); ValueError if not possible.

    The edited text is parsed back and must yield exactly ``values`` before it replaces the file, so a
    file that cannot be edited safely is refused rather than corrupted.
    """
    target = os.path.realpath(path)  # edit a symlinked config, not replace the link with a file
    try:
        with open(target, encoding="utf-8", newline="") as fh:
            text = fh.read()
        mode = stat.S_IMODE(os.stat(target).st_mode)
    except FileNotFoundError:
        text, mode = "", FILE_MODE
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read: {exc}") from None
    try:
        new_text = edit_text(text, values)
        reloaded = _plain_load(new_text)
    except YAMLError as exc:
        raise ValueError(f"cannot edit it, {_describe(exc)}") from None
    except ValueError as exc:
        raise ValueError(f"cannot edit it: {exc}") from None
    if not isinstance(reloaded, dict) or any(reloaded.get(k) != v for k, v in values.items()):
        raise ValueError("cannot edit it without changing other values; fix its YAML first (loading it says why)")
    try:
        atomic_write_bytes(target, new_text.encode("utf-8"), mode=mode)
    except OSError as exc:
        raise ValueError(f"cannot write: {exc.strerror or exc}") from None
