"""The YAML side of the configuration: reading a config file strictly and editing it line by line.

Kept apart from the schema (``config.py``) because it is text mechanics only: it knows YAML, lines and
files, nothing about fields or rules. Reading reports what PyYAML silently accepts (duplicate keys,
non-string keys); editing changes only the ``KEY: value`` lines asked for, so a user's comments survive
the menu's "Configure Parameters", and it writes through a temp file and ``os.replace``.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import tempfile
from collections.abc import Mapping

import yaml

_KEY_LINE = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)([ \t]*:)((?:[ \t][^\r\n]*)?)(\r?\n)?\Z")
_PLAIN = re.compile(r"[A-Za-z0-9_./+-][A-Za-z0-9_./:@+-]*")
_STR_TAG = "tag:yaml.org,2002:str"


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
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        return {}, [f"{source}: invalid YAML{where}: {getattr(exc, 'problem', None) or exc}"]
    if root is None:
        return {}, []  # an empty file, or only comments: nothing set
    if not isinstance(root, yaml.MappingNode) or not isinstance(data, dict):
        found = {yaml.SequenceNode: "a list", yaml.ScalarNode: "a single value"}.get(type(root), "other")
        return {}, [f"{source}: expected a mapping of KEY: value lines, found {found}"]
    problems: list[str] = []
    first_line: dict[str, int] = {}
    for key_node, _ in root.value:
        line = key_node.start_mark.line + 1
        if key_node.tag != _STR_TAG or not isinstance(key_node.value, str):
            problems.append(f"{source}: line {line}: key {str(key_node.value)[:60]!r} is not a field name")
        elif key_node.value in first_line:
            first = first_line[key_node.value]
            problems.append(f"{source}: line {line}: {key_node.value}: duplicate key (first on line {first})")
        else:
            first_line[key_node.value] = line
    return {k: v for k, v in data.items() if isinstance(k, str)}, problems


def yaml_scalar(value: object) -> str:
    """A YAML scalar that PyYAML loads back as exactly ``value`` (the empty string for None)."""
    if value is None:
        return ""
    if isinstance(value, float):
        text = repr(value)
        mantissa, e, exponent = text.partition("e")
        # PyYAML (YAML 1.1) reads 1e-05 as text: its float pattern wants a dot in the mantissa.
        return f"{mantissa}.0e{exponent}" if e and "." not in mantissa else text
    if not isinstance(value, str):
        return str(value)
    if _PLAIN.fullmatch(value):
        with contextlib.suppress(yaml.YAMLError):
            if yaml.safe_load(value) == value:  # not "1", "true", "null", "1.0"...
                return value
    # PyYAML's own double-quoted style escapes whatever YAML could not carry raw (breaks, controls).
    return yaml.safe_dump(value, default_style='"', allow_unicode=True, width=1 << 30).rstrip("\n")


def _inline_comment(rest: str) -> str:
    """The trailing ``  # comment`` of a value, with its leading spaces; a '#' inside quotes is not one."""
    quote = ""
    for i, ch in enumerate(rest):
        if quote:
            quote = "" if ch == quote and rest[i - 1] != "\\" else quote
        elif ch in "'\"" and not rest[:i].strip():
            quote = ch
        elif ch == "#" and (i == 0 or rest[i - 1] in " \t"):
            return rest[len(rest[:i].rstrip()) :]
    return ""


def edit_lines(text: str, scalars: Mapping[str, str]) -> str:
    """``text`` with each top-level ``KEY: value`` of ``scalars`` set; missing keys appended at the end."""
    newline = "\r\n" if "\r\n" in text else "\n"
    out: list[str] = []
    seen: set[str] = set()
    replacing = False
    for line in re.findall(r"[^\n]*\n|[^\n]+", text):  # str.splitlines would also split on \x0c, \u2028...
        if replacing and line[:1] in (" ", "\t") and line.strip():
            continue  # an indented continuation of the value being replaced
        replacing = False
        match = _KEY_LINE.match(line)
        if match is None or match.group(1) not in scalars:
            out.append(line)
            continue
        key, sep, rest, eol = match.groups()
        value = f" {scalars[key]}" if scalars[key] else ""
        out.append(f"{key}{sep}{value}{_inline_comment(rest)}{eol or ''}")
        seen.add(key)
        replacing = True
    missing = [key for key in scalars if key not in seen]
    if missing and out and not out[-1].endswith("\n"):
        out.append(newline)
    out += [f"{key}:{' ' + scalars[key] if scalars[key] else ''}{newline}" for key in missing]
    return "".join(out)


def update_file(path: str | os.PathLike[str], values: Mapping[str, object]) -> None:
    """Set ``values`` in the YAML file at ``path`` in place (created 0600 if missing); ValueError if not possible.

    The edited text is parsed back and must yield exactly ``values`` before it replaces the file, so a
    file the line editor cannot handle is refused rather than corrupted.
    """
    target = os.path.realpath(path)  # edit a symlinked config, not replace the link with a file
    try:
        with open(target, encoding="utf-8", newline="") as fh:
            text = fh.read()
        mode = stat.S_IMODE(os.stat(target).st_mode)
    except FileNotFoundError:
        text, mode = "", 0o600
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read: {exc}") from None
    new_text = edit_lines(text, {key: yaml_scalar(value) for key, value in values.items()})
    try:
        reloaded = yaml.safe_load(new_text)
    except yaml.YAMLError:
        reloaded = None
    if not isinstance(reloaded, dict) or any(reloaded.get(k) != v for k, v in values.items()):
        raise ValueError("cannot update it line by line; fix its YAML first (loading it says why)")
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(target), prefix=".config-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(new_text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise ValueError(f"cannot write: {exc.strerror or exc}") from None
