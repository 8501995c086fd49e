"""Secret redaction: one rule table, applied to every event message, teacher reply and output edge.

A secret is replaced by a placeholder naming its kind (``[REDACTED:openai_key]``), so what was hidden stays
visible without the value. Rules that need context (``password=...``, ``Authorization: Bearer ...``,
``scheme://user:pass@host``) replace only the value and keep the context. The rules live in
:mod:`heidi_engine.bus.secret_rule`; each runs in time linear in the text.

Most text is clean, so every rule carries a few lowercase trigger substrings, at least one of which occurs in
anything it can match: clean text costs one ``lower()`` and a few dozen substring tests (fewer where it lacks
the punctuation most triggers hold, see :data:`_MARKS`), and text that holds a trigger runs only the rules it
triggers. Redaction repeats until nothing changes (at most four passes), which keeps it idempotent even where
a replacement happens to complete a new match with its neighbours.

Characters nobody sees (zero-width spaces and joiners, soft hyphens, bidi marks: Unicode's format characters)
cannot hide a secret: the rules also read the text without them, and with tag characters read as ASCII
(see :func:`normal_form`). A secret found either way is hidden; the invisible
characters are kept everywhere else, so text without a secret comes back unchanged.

Besides the table, a :class:`Redactor` hides the literal values of secret-looking environment variables
(``OPENAI_API_KEY``, ``HF_TOKEN``...) and any extra secrets it is given. In a file path, a secret becomes a
marker that keeps the path one (``data/REDACTED-openai_key/x.jsonl``, see :meth:`Redactor.redact_path`).
"""

from __future__ import annotations

import bisect
import dataclasses
import itertools
import os
import re
import threading
from collections.abc import Callable, Iterable, Mapping

from heidi_engine.bus.secret_rule import REFERENCE, RULES, SECRET_ENV_NAME, SECRET_KEY_NAMES, Rule
from heidi_engine.bus.secret_rule import TABLE as _TABLE  # the name the tests know

__all__ = [
    "RULES",
    "SECRET_ENV_NAME",
    "Redactor",
    "Rule",
    "clean",
    "default_redactor",
    "normal_form",
    "redact",
    "redact_path",
    "scan",
    "strip_ansi",
]


@dataclasses.dataclass(frozen=True)
class _Entry:
    rule: Rule
    triggers: tuple[str, ...]  # at least one occurs in every match (lowercased unless `literal`)
    literal: bool  # literal secrets are looked for case-sensitively in the original text
    groups: frozenset[str]  # the pattern's secret groups; without any, the whole match is the secret
    repl: str | Callable[[re.Match[str]], str]
    inserts: frozenset[str] = frozenset()  # the triggers its placeholder holds


_MAX_PASSES = 4
_ENV_MIN_LEN = 8
_EXTRA_MIN_LEN = 4
# Most triggers hold one of these; a trigger can be in the lowered text only where each of its characters is,
# so one test for a character the text lacks rules out every trigger holding it. `_present` tests them in
# this order.
_MARKS = "-_:."

# Unicode's format characters (category Cf) and the other default-ignorable ones (variation selectors, the
# combining grapheme joiner, Hangul fillers): removed from the text the rules read. Listed, as a scan of
# every code point at import would cost a tenth of a second; a test checks the list holds every Cf
# character of the running Python. Tag characters (E0020-E007E) are Cf too but read as ASCII instead.
_IGNORABLE_RANGES = (
    (0x00AD, 0x00AD), (0x034F, 0x034F), (0x0600, 0x0605), (0x061C, 0x061C), (0x06DD, 0x06DD),
    (0x070F, 0x070F), (0x0890, 0x0891), (0x08E2, 0x08E2), (0x115F, 0x1160), (0x17B4, 0x17B5),
    (0x180B, 0x180F), (0x200B, 0x200F), (0x202A, 0x202E), (0x2060, 0x2064), (0x2066, 0x206F),
    (0x3164, 0x3164), (0xFE00, 0xFE0F), (0xFEFF, 0xFEFF), (0xFFA0, 0xFFA0), (0xFFF9, 0xFFFB),
    (0x110BD, 0x110BD), (0x110CD, 0x110CD), (0x13430, 0x1343F), (0x1BCA0, 0x1BCA3), (0x1D173, 0x1D17A),
    (0xE0001, 0xE0001), (0xE007F, 0xE007F), (0xE0100, 0xE01EF),
)  # fmt: skip


def _char_class(ranges: Iterable[tuple[int, int]]) -> re.Pattern[str]:
    return re.compile("[" + "".join(f"{chr(first)}-{chr(last)}" for first, last in ranges) + "]")


# Split by plane: a class of BMP characters is one table lookup a character, one with astral ranges a test
# per range, so the astral one runs only on text that holds an astral character.
_IGNORABLE = _char_class(r for r in _IGNORABLE_RANGES if r[1] <= 0xFFFF)
_IGNORABLE_ASTRAL = _char_class(r for r in _IGNORABLE_RANGES if r[1] > 0xFFFF)
# Tag characters: an invisible copy of printable ASCII (how text is smuggled past a reader), read as ASCII.
_TAGS = re.compile("[\\U000e0020-\\U000e007e]+")
_PLACEHOLDER = re.compile(r"\[REDACTED:([A-Za-z0-9_:]+)\]")

_ANSI = re.compile(
    r"\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"  # OSC (titles, hyperlinks), to the end when unterminated
    r"|\x1b[PX^_][^\x1b]*(?:\x1b\\)?"  # DCS, SOS, PM, APC strings
    r"|(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]"  # CSI (colours, cursor moves), 7- and 8-bit
    r"|\x1b[ -/]*[0-~]"  # other escape sequences (charset selection, keypad modes...)
    r"|[\x00-\x08\x0b-\x1f\x7f-\x9f]"  # the remaining C0 and C1 controls, keeping \n and \t
)
# Every sequence above starts with one of these, and a search for one character class is cheap.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def strip_ansi(text: str) -> str:
    """Remove ANSI escape sequences and control characters other than newline and tab."""
    return _ANSI.sub("", text) if _CONTROL.search(text) else text


def normal_form(text: str) -> str:
    """``text`` as the rules also read it: format characters (zero-width space and joiners, soft hyphen,
    word joiner, byte order mark, bidi marks...) and the other invisible ones removed, tag characters read
    as the ASCII they stand for. ``text`` itself (the same object) when there is nothing to change.

    Not NFKC: folding fullwidth letters would send every CJK text (with its fullwidth commas) through both
    readings at several times the cost, and a key is pasted, not typed with an input method; NFKC also
    rewrites ligatures, superscripts and "…" and can make a text 18 times longer.
    """
    if text.isascii():
        return text
    # Each astral character takes two UTF-16 units: a cheap test for whether the astral classes can match.
    astral = len(text.encode("utf-16-le", "surrogatepass")) > 2 * len(text)
    if _IGNORABLE.search(text):
        text = _IGNORABLE.sub("", text)
    if astral:
        text = _IGNORABLE_ASTRAL.sub("", text)
        # A tag character's lowest UTF-32 byte is the ASCII character it stands for.
        text = _TAGS.sub(lambda tags: tags[0].encode("utf-32-le")[::4].decode("ascii"), text)
    return text


def _original_position(text: str) -> Callable[[int], int]:
    """A position in ``normal_form(text)`` -> the position of the same character in ``text``."""
    removed = [match.start() for match in _IGNORABLE.finditer(text)]
    if len(text.encode("utf-16-le", "surrogatepass")) > 2 * len(text):
        removed = sorted(removed + [match.start() for match in _IGNORABLE_ASTRAL.finditer(text)])
    kept_before = [position - count for count, position in enumerate(removed)]
    return lambda index: index + bisect.bisect_right(kept_before, index)


def _span_replacer(placeholder: str, groups: frozenset[str]) -> Callable[[re.Match[str]], str]:
    if not groups:
        return lambda match: placeholder

    def replace(match: re.Match[str]) -> str:
        group = match.lastgroup  # one group at most takes part in a match of a rule
        if group not in groups:
            return match[0]  # a skip: nothing of this rule in it
        start, end = match.span(group)
        whole, base = match[0], match.start()
        return whole[: start - base] + placeholder + whole[end - base :]

    return replace


def _secret_span(match: re.Match[str], groups: frozenset[str]) -> tuple[int, int] | None:
    if not groups:
        return match.span()
    group = match.lastgroup
    return match.span(group) if group in groups else None


def _entry(rule: Rule, triggers: tuple[str, ...], literal: bool = False) -> _Entry:
    groups = frozenset(name for name in rule.pattern.groupindex if name.startswith("secret"))
    # A plain string is the fastest replacement; the placeholder must then hold no template escapes.
    repl = (
        _span_replacer(rule.placeholder, groups) if groups or "\\" in rule.placeholder else rule.placeholder
    )
    return _Entry(rule, triggers, literal, groups, repl)


def _replace_spans(text: str, spans: list[tuple[int, int, str, str]]) -> str:
    """``text`` with every span replaced by its placeholder; overlapping spans become one, with the
    placeholder of the one that starts first (the longest of those)."""
    pieces: list[str] = []
    position = 0  # where the text not yet copied or replaced begins
    for start, stop, placeholder, _ in sorted(spans, key=lambda span: (span[0], -span[1])):
        if start < position:  # overlaps the span replaced last: it grows
            position = max(position, stop)
            continue
        pieces += (text[position:start], placeholder)
        position = stop
    pieces.append(text[position:])
    return "".join(pieces)


class Redactor:
    """Applies :data:`RULES` plus literal secrets (values of secret-looking env variables, extras).

    ``env`` defaults to ``os.environ`` as it is now; a variable is taken when its name matches
    :data:`SECRET_ENV_NAME` and its value has at least 8 characters and is not a path.
    """

    def __init__(self, env: Mapping[str, str] | None = None, extra_secrets: Iterable[str] = ()) -> None:
        source = os.environ if env is None else env
        literals: dict[str, str] = {}  # value -> placeholder
        for name in sorted(source):
            if not SECRET_ENV_NAME.match(name):
                continue
            raw = source[name]
            if not isinstance(raw, str):
                raise TypeError(f"environment variable {name} must be a str, got {type(raw).__name__}")
            value = normal_form(raw.strip())
            # Paths (GOOGLE_APPLICATION_CREDENTIALS=/home/...) are not secrets and must stay readable.
            if len(value) >= _ENV_MIN_LEN and not value.startswith(("/", "~/", "./")):
                literals.setdefault(value, f"[REDACTED:env:{name}]")
        for secret in extra_secrets:
            if not isinstance(secret, str):
                raise TypeError(f"extra secret must be str, got {type(secret).__name__}")
            if len(secret.strip()) < _EXTRA_MIN_LEN:
                raise ValueError(
                    f"extra secret too short ({len(secret.strip())} chars): at least {_EXTRA_MIN_LEN} are "
                    "needed so that ordinary text is not mangled"
                )
            literals.setdefault(normal_form(secret.strip()), "[REDACTED:extra_secret]")
        placeholders = {rule.placeholder for rule in RULES} | set(literals.values())
        entries: list[_Entry] = []
        # Longest first, so that a secret containing another is hidden whole.
        for value in sorted(literals, key=len, reverse=True):
            # A value found inside a placeholder would be redacted again on every pass.
            if "[REDACTED" in value or any(value in placeholder for placeholder in placeholders):
                continue
            kind = "env_secret" if literals[value].startswith("[REDACTED:env:") else "extra_secret"
            rule = Rule(kind, re.compile(re.escape(value)), literals[value])
            entries.append(_entry(rule, (value,), literal=True))
        entries.extend(_entry(rule, triggers) for rule, triggers in _TABLE)
        self._literals: tuple[str, ...] = tuple(t for e in entries if e.literal for t in e.triggers)
        self._triggers: tuple[str, ...] = tuple(
            dict.fromkeys(t for e in entries if not e.literal for t in e.triggers)
        )
        # The triggers worth looking for, by which of _MARKS the lowered text holds.
        self._by_marks: dict[tuple[bool, ...], tuple[str, ...]] = {
            held: tuple(
                t for t in self._triggers if all(h or m not in t for m, h in zip(_MARKS, held, strict=True))
            )
            for held in itertools.product((False, True), repeat=len(_MARKS))
        }
        self._entries: tuple[_Entry, ...] = tuple(
            dataclasses.replace(
                entry, inserts=frozenset(t for t in self._triggers if t in entry.rule.placeholder.lower())
            )
            for entry in entries
        )

    def redact(self, text: str) -> str:
        """``text`` with every secret replaced by its placeholder."""
        return self.redact_with_kinds(text)[0]

    def scan(self, text: str) -> frozenset[str]:
        """The kinds of secret found in ``text``; empty when it is clean."""
        return self.redact_with_kinds(text)[1]

    def redact_with_kinds(self, text: str) -> tuple[str, frozenset[str]]:
        """The redacted text and the kinds of secret that were replaced."""
        if not isinstance(text, str):
            raise TypeError(f"redaction needs str, got {type(text).__name__}")
        normal = normal_form(text)
        if normal is not text:
            return self._redact_both_readings(text, normal)
        present = self._present(text)
        kinds: set[str] = set()
        for _ in range(_MAX_PASSES):
            if not present:
                break
            text, changed = self._pass(text, present)
            if not changed:
                break
            kinds.update(entry.rule.kind for entry in changed)
            # A replacement adds a trigger of the table only inside its placeholder ([REDACTED:password]
            # holds "passw"), as none holds a bracket; a literal secret may, so those are looked for again.
            # What was present may be gone: a rule run in vain finds nothing.
            present = present.union(*(entry.inserts for entry in changed))
            present.update(literal for literal in self._literals if literal in text)
        return text, frozenset(kinds)

    def clean(self, text: str, max_len: int | None = None) -> str:
        """Strip ANSI and control characters, redact, then cut to ``max_len`` (ending with "…" when cut)."""
        if max_len is not None and max_len < 1:
            raise ValueError(f"max_len must be >= 1 or None, got {max_len}")
        text = self.redact(strip_ansi(text))
        if max_len is not None and len(text) > max_len:
            return text[: max_len - 1] + "…"
        return text

    def redact_path(self, path: str) -> str:
        """``path`` with each secret replaced by a marker that is a plain file-name part, ``REDACTED-<kind>``
        (``REDACTED-openai_key``, ``REDACTED-env-HF_TOKEN``), so that a relative path stays one."""
        return _PLACEHOLDER.sub(lambda match: "REDACTED-" + match[1].replace(":", "-"), self.redact(path))

    def redact_obj(self, obj: object) -> object:
        """A copy of ``obj`` with every string in dicts, lists, tuples and sets redacted, dict keys too.

        A string value under a key that names a secret (``"password"``, ``"api_key"``...) is hidden whole,
        since such a value rarely matches a rule on its own. Other values are returned as they are.
        """
        if isinstance(obj, str):
            return self.redact(obj)
        if isinstance(obj, dict):
            return {self.redact_obj(key): self._redact_value(key, value) for key, value in obj.items()}
        if isinstance(obj, tuple) and hasattr(obj, "_fields"):  # a namedtuple takes its fields positionally
            named: Callable[..., object] = type(obj)
            return named(*(self.redact_obj(item) for item in obj))
        if isinstance(obj, (list, tuple, set, frozenset)):
            return type(obj)(self.redact_obj(item) for item in obj)
        return obj

    def _redact_value(self, key: object, value: object) -> object:
        if isinstance(key, str) and isinstance(value, str) and value and not REFERENCE.match(value):
            for kind, name in SECRET_KEY_NAMES:
                if name.fullmatch(key):
                    return f"[REDACTED:{kind}]"
        return self.redact_obj(value)

    def _may_hold_secret(self, text: str) -> bool:
        # The fast path for clean text: one flat loop over every trigger, no regex.
        lowered = text.lower()
        for trigger in self._triggers:
            if trigger in lowered:
                return True
        return any(literal in text for literal in self._literals)

    def _present(self, text: str) -> set[str]:
        """The triggers in ``text`` (literal secrets looked for as they are, the others in lowercase): the
        same set as testing every trigger, since a trigger left out lacks a character of the lowered text."""
        lowered = text.lower()
        held = ("-" in lowered, "_" in lowered, ":" in lowered, "." in lowered)
        present = {trigger for trigger in self._by_marks[held] if trigger in lowered}
        present.update(literal for literal in self._literals if literal in text)
        return present

    def _pass(self, text: str, present: set[str]) -> tuple[str, list[_Entry]]:
        changed: list[_Entry] = []
        for entry in self._entries:
            if not present.isdisjoint(entry.triggers):
                # A rule's skips replace text by itself: what changed is what was found.
                redacted = entry.rule.pattern.sub(entry.repl, text)
                if redacted is not text and redacted != text:
                    changed.append(entry)
                    text = redacted
        return text, changed

    def _redact_both_readings(self, text: str, normal: str) -> tuple[str, frozenset[str]]:
        # Text with invisible characters. Either reading can see a secret the other misses:
        # "sk-pr\u200boj-..." only without the zero-width space, "word\u200bsk-..." only with it (the
        # space ends the word).
        # What every rule finds in both, mapped onto the text as it is, is replaced at once; the characters
        # outside a secret are kept.
        kinds: set[str] = set()
        for _ in range(_MAX_PASSES):
            original = _original_position(text)
            spans = self._spans(text)
            for start, end, placeholder, kind in self._spans(normal):
                spans.append((original(start), original(end - 1) + 1, placeholder, kind))
            if not spans:
                break
            kinds.update(kind for *_, kind in spans)
            text = _replace_spans(text, spans)
            normal = normal_form(text)
        return text, frozenset(kinds)

    def _spans(self, text: str) -> list[tuple[int, int, str, str]]:
        """Every secret that some rule finds in ``text`` as it is: (start, end, placeholder, kind)."""
        present = self._present(text)
        spans: list[tuple[int, int, str, str]] = []
        for entry in self._entries:
            if not present.isdisjoint(entry.triggers):
                for match in entry.rule.pattern.finditer(text):
                    span = _secret_span(match, entry.groups)
                    if span is not None and span[1] > span[0]:
                        spans.append((*span, entry.rule.placeholder, entry.rule.kind))
        return spans


class _Unfiltered(Redactor):
    """Looks for every trigger in every text, as before the pre-filter: what tests and the bench hold
    :class:`Redactor` to."""

    def _present(self, text: str) -> set[str]:
        lowered = text.lower()
        present = {trigger for trigger in self._triggers if trigger in lowered}
        present.update(literal for literal in self._literals if literal in text)
        return present


_default: Redactor | None = None
_default_lock = threading.Lock()


def default_redactor() -> Redactor:
    """The shared :class:`Redactor` over ``os.environ``, built on first use."""
    global _default
    if _default is None:
        with _default_lock:
            if _default is None:
                _default = Redactor()
    return _default


def redact(text: str) -> str:
    """``text`` with every secret replaced, by the default redactor."""
    return default_redactor().redact(text)


def scan(text: str) -> frozenset[str]:
    """The kinds of secret in ``text``, by the default redactor."""
    return default_redactor().scan(text)


def clean(text: str, max_len: int | None = None) -> str:
    """Strip ANSI, redact and cut ``text`` to ``max_len``, by the default redactor."""
    return default_redactor().clean(text, max_len)


def redact_path(path: str) -> str:
    """``path`` with each secret replaced by a path-safe marker, by the default redactor."""
    return default_redactor().redact_path(path)
