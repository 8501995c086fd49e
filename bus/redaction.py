"""Secret redaction: one rule table, applied to every event message, teacher reply and output edge.

A secret is replaced by a placeholder naming its kind (``[REDACTED:openai_key]``), so what was hidden stays
visible without the value. Rules that need context (``password=...``, ``Authorization: Bearer ...``,
``scheme://user:pass@host``) replace only the value and keep the context.

Most text is clean, so every rule carries a few lowercase trigger substrings, at least one of which occurs in
anything it can match: clean text costs one ``lower()`` and a few dozen substring tests, and text that holds a
trigger runs only the rules it triggers. Redaction repeats until nothing changes (at most four passes), which
keeps it idempotent even where a replacement happens to complete a new match with its neighbours.

Besides the table, a :class:`Redactor` hides the literal values of secret-looking environment variables
(``OPENAI_API_KEY``, ``HF_TOKEN``...) and any extra secrets it is given.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

__all__ = [
    "RULES",
    "SECRET_ENV_NAME",
    "Redactor",
    "Rule",
    "clean",
    "default_redactor",
    "redact",
    "scan",
    "strip_ansi",
]


@dataclass(frozen=True)
class Rule:
    """One kind of secret: its short snake_case ``kind``, its ``pattern`` and its ``placeholder``.

    When the pattern has named groups starting with ``secret``, only the span of the group that took part
    in a match is replaced (the key of ``password=...`` stays); otherwise the whole match is.
    """

    kind: str
    pattern: re.Pattern[str]
    placeholder: str


@dataclass(frozen=True)
class _Entry:
    rule: Rule
    triggers: tuple[str, ...]  # at least one occurs in every match (lowercased unless `literal`)
    literal: bool  # literal secrets are looked for case-sensitively in the original text
    repl: str | Callable[[re.Match[str]], str]


_MAX_PASSES = 4
_ENV_MIN_LEN = 8
_EXTRA_MIN_LEN = 4
_BARE_MAX = 512

# Characters of a bare (unquoted) assigned value; anything else ends it.
_V = r"[^\s\"'`,;&()\[\]{}<>|\\]"
_SYMBOL = r"!@#$%^*+/=~?"


# A bare value is a secret only when it does not read as code or a word: it has a digit or symbol and is
# not an identifier being called or indexed, or it is a long run of letters. Under credential keys it also
# needs a letter or symbol, since `rejected_secret: 1234567` is a count; a password may be all digits.
# The length bound keeps text like "token:token:token:..." linear: every key word starts a scan.
def _bare(needs_letter: bool) -> str:
    letter = rf"(?={_V}{{0,{_BARE_MAX}}}[A-Za-z{_SYMBOL}])" if needs_letter else ""
    return (
        rf"(?P<secret>(?!\$[A-Za-z_{{(])"
        rf"(?:(?={_V}{{0,{_BARE_MAX}}}[0-9{_SYMBOL}]){letter}|(?=[A-Za-z]{{20}}))"
        rf"{_V}{{6,{_BARE_MAX}}})(?!{_V}|[(\[])"
    )


# Quoted values that open with < [ { or a $VARIABLE are tokenizer special tokens, placeholders or
# references, not secrets; this also keeps a placeholder from being redacted again. Teacher replies are
# code, so stand-ins like "xxxx", "***" or "your-api-key" are left too: a sample is not rejected for them.
_NOT_REFERENCE = r"(?![\[<{]|\$[A-Za-z_{(])"
_REFERENCE = re.compile(r"[\[<{]|\$[A-Za-z_{(]")
_STAND_IN = r"(?!(?:[xX*.#_-]+|[Yy]our[A-Za-z_ -]*)\\?[\"'])"
_QUOTED = (
    rf'\\?"(?P<secret_dq>{_NOT_REFERENCE}{_STAND_IN}(?:[^"\\\n]|\\(?!")){{3,}})\\?"'
    rf"|\\?'(?P<secret_sq>{_NOT_REFERENCE}{_STAND_IN}(?:[^'\\\n]|\\(?!')){{3,}})\\?'"
)
_SEPARATOR = r"\\?[\"']?[ \t]*[:=](?!=)[ \t]*"
_PASSWORD_KEY = r"pass(?:word|wd|phrase)"
# Key words of credential assignments, each with the trigger its rule needs. Whatever comes before the word
# (OPENAI_API_KEY, db_secret, mytoken) is left out of the pattern and kept. Tokenizer configs are full of
# pad_token, eos_token...: those are not credentials.
_CREDENTIAL_KEYS: tuple[tuple[str, str], ...] = (
    ("secret", r"secret(?:[_.-]?(?:access[_.-]?)?key)?"),
    (
        "token",
        r"token"
        + "".join(f"(?<!{kind}_token)" for kind in ("pad", "eos", "bos", "unk", "sep", "cls", "mask")),
    ),
    ("credential", r"credentials?"),
    ("api", r"api[_.-]?key"),
    ("access", r"access[_.-]?key"),
    ("private", r"private[_.-]?key"),
)


def _assignment(key: str, needs_letter: bool = True) -> str:
    return rf"{key}{_SEPARATOR}(?:{_QUOTED}|{_bare(needs_letter)})"


def _rule(kind: str, pattern: str, triggers: tuple[str, ...], flags: int = 0) -> tuple[Rule, tuple[str, ...]]:
    return Rule(kind, re.compile(pattern, flags | re.ASCII), f"[REDACTED:{kind}]"), triggers


# Patterns open with a literal where they can, since the regex engine then finds candidates by a fast
# substring search; a word boundary is checked by a lookbehind placed after that literal.
_I = re.IGNORECASE
_PRIVATE_KEY_LINE = r"[ A-Z0-9]*PRIVATE KEY(?: BLOCK)?-----"
_TABLE: tuple[tuple[Rule, tuple[str, ...]], ...] = (
    # A header without its END line (a cut message) still hides everything after it.
    _rule(
        "private_key",
        rf"-----BEGIN{_PRIVATE_KEY_LINE}[\s\S]*?(?:-----END{_PRIVATE_KEY_LINE}|\Z)",
        ("-----begin",),
    ),
    _rule(
        "url_credentials",
        r"://(?<=[A-Za-z0-9]://)(?P<secret>[^\s/?#@:\[\]]*:[^\s/?#@\[\]]+)@(?=[A-Za-z0-9\[])",
        ("://",),
    ),
    _rule(
        "slack_webhook",
        r"https://hooks\.slack\.com/(?:services|workflows|triggers)/(?P<secret>[A-Za-z0-9_/-]+)",
        ("hooks.slack.com",),
        _I,
    ),
    _rule("anthropic_key", r"sk-ant-(?<![A-Za-z0-9_-]sk-ant-)[A-Za-z0-9_-]{20,}", ("sk-ant-",)),
    _rule("openai_key", r"sk-(?<![A-Za-z0-9_-]sk-)(?=[A-Za-z0-9_-]*[0-9])[A-Za-z0-9_-]{20,}", ("sk-",)),
    _rule(
        "github_token",
        r"g(?<![A-Za-z0-9_]g)(?:h[pousr]_[A-Za-z0-9]{30,}|ithub_pat_[A-Za-z0-9_]{30,})",
        ("ghp_", "gho_", "ghs_", "ghu_", "ghr_", "github_pat_"),
    ),
    _rule("gitlab_token", r"glpat-(?<![A-Za-z0-9_-]glpat-)[A-Za-z0-9_-]{20,}", ("glpat-",)),
    _rule(
        "slack_token",
        r"xox(?<![A-Za-z0-9_-]xox)[abprs]-(?=[A-Za-z0-9-]*[0-9])[A-Za-z0-9-]{10,}",
        ("xoxa-", "xoxb-", "xoxp-", "xoxr-", "xoxs-"),
    ),
    _rule(
        "aws_access_key_id",
        r"A(?<![A-Za-z0-9]A)(?:KIA|SIA|BIA|CCA)[A-Z0-9]{16}(?![A-Za-z0-9])",
        ("akia", "asia", "abia", "acca"),
    ),
    _rule(
        "aws_secret_key",
        rf"secret[_.-]?(?:access[_.-]?)?key{_SEPARATOR}[\"']?(?P<secret>[A-Za-z0-9/+=]{{40}})(?![A-Za-z0-9/+=])",
        ("secret",),
        _I,
    ),
    _rule("google_api_key", r"AIza(?<![A-Za-z0-9_-]AIza)[0-9A-Za-z_-]{35}(?![A-Za-z0-9_-])", ("aiza",)),
    _rule(
        "stripe_key",
        r"[sr]k_(?<![A-Za-z0-9_][sr]k_)(?:live|test)_[0-9A-Za-z]{16,}",
        ("sk_live_", "sk_test_", "rk_live_", "rk_test_"),
    ),
    _rule(
        "huggingface_token",
        r"hf_(?<![A-Za-z0-9_-]hf_)(?=[A-Za-z0-9]*[A-Z])(?=[A-Za-z0-9]*[a-z])[A-Za-z0-9]{30,}(?![A-Za-z0-9])",
        ("hf_",),
    ),
    _rule("jwt", r"eyJ(?<![A-Za-z0-9_-]eyJ)[A-Za-z0-9_-]{4,}\.e[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]*", ("eyj",)),
    _rule(
        "bearer_token",
        rf"authorization(?<![A-Za-z0-9_-]authorization){_SEPARATOR}[\"']?(?:bearer|token|basic|digest)[ \t]+"
        r"(?P<secret>(?![\[<{$%])[^\s\"',;]{6,})",
        ("authorization",),
        _I,
    ),
    _rule(
        "bearer_token",
        r"bearer(?<![A-Za-z0-9_-]bearer)[ \t]+"
        r"(?P<secret>(?=[A-Za-z0-9._~+/-]*[0-9])[A-Za-z0-9._~+/-]{16,}=*)(?![A-Za-z0-9._~+/=-])",
        ("bearer",),
        _I,
    ),
    _rule("password", _assignment(_PASSWORD_KEY, needs_letter=False), ("passw", "passphrase"), _I),
    *(_rule("credential", _assignment(key), (trigger,), _I) for trigger, key in _CREDENTIAL_KEYS),
)

RULES: tuple[Rule, ...] = tuple(rule for rule, _ in _TABLE)
"""The single rule table, applied in order (the most specific first)."""

SECRET_ENV_NAME = re.compile(
    r"""(?ix)^
    # names of paths, sockets, endpoints and settings *about* a secret hold no secret
    (?!.*_(?:FILE|PATH|DIR|SOCK|SOCKET|URL|HOST|PORT|TYPE|MODE|NAME|ENV|LEN|LENGTH|SIZE|LIMIT|ENABLED)\Z)
    (?:[A-Z0-9]+_)*
    (?:[A-Z0-9]*(?:TOKEN|SECRET|SECRETS|PASSWORD|PASSWD|PASSPHRASE|APIKEY)|KEY|AUTH|PASS|CREDENTIALS?|CREDS)
    (?:_[A-Z0-9]+)*\Z""",
)
"""Environment variable names whose values are secrets (OPENAI_API_KEY, HF_TOKEN, DB_PASSWORD...)."""

# For redact_obj: dict keys that name a secret, by their last word, as the assignment rules read them.
_SECRET_KEY_NAMES = (
    ("password", re.compile(rf".*{_PASSWORD_KEY}", _I | re.ASCII | re.S)),
    (
        "credential",
        re.compile(rf".*(?:{'|'.join(key for _, key in _CREDENTIAL_KEYS)})", _I | re.ASCII | re.S),
    ),
)

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


def _span_replacer(placeholder: str, groups: tuple[str, ...]) -> Callable[[re.Match[str]], str]:
    def replace(match: re.Match[str]) -> str:
        for group in groups:
            start = match.start(group)
            if start >= 0:
                whole, base = match.group(), match.start()
                return whole[: start - base] + placeholder + whole[match.end(group) - base :]
        return placeholder

    return replace


def _entry(rule: Rule, triggers: tuple[str, ...], literal: bool = False) -> _Entry:
    groups = tuple(name for name in rule.pattern.groupindex if name.startswith("secret"))
    # A plain string is the fastest replacement; the placeholder must then hold no template escapes.
    repl = (
        _span_replacer(rule.placeholder, groups) if groups or "\\" in rule.placeholder else rule.placeholder
    )
    return _Entry(rule, triggers, literal, repl)


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
            value = raw.strip()
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
            literals.setdefault(secret.strip(), "[REDACTED:extra_secret]")
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
        self._entries: tuple[_Entry, ...] = tuple(entries)
        self._literals: tuple[str, ...] = tuple(t for e in entries if e.literal for t in e.triggers)
        self._triggers: tuple[str, ...] = tuple(
            dict.fromkeys(t for e in entries if not e.literal for t in e.triggers)
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
        if not self._may_hold_secret(text):
            return text, frozenset()
        kinds: set[str] = set()
        for _ in range(_MAX_PASSES):
            text, found = self._pass(text)
            if not found:
                break
            kinds |= found
        return text, frozenset(kinds)

    def clean(self, text: str, max_len: int | None = None) -> str:
        """Strip ANSI and control characters, redact, then cut to ``max_len`` (ending with "…" when cut)."""
        if max_len is not None and max_len < 1:
            raise ValueError(f"max_len must be >= 1 or None, got {max_len}")
        text = self.redact(strip_ansi(text))
        if max_len is not None and len(text) > max_len:
            return text[: max_len - 1] + "…"
        return text

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
        if isinstance(key, str) and isinstance(value, str) and value and not _REFERENCE.match(value):
            for kind, name in _SECRET_KEY_NAMES:
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

    def _pass(self, text: str) -> tuple[str, set[str]]:
        lowered = text.lower()
        found: set[str] = set()
        for entry in self._entries:
            haystack = text if entry.literal else lowered
            for trigger in entry.triggers:
                if trigger in haystack:
                    text, count = entry.rule.pattern.subn(entry.repl, text)
                    if count:
                        found.add(entry.rule.kind)
                    break
        return text, found


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
