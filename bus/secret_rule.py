"""The rule table of redaction: one :class:`Rule` per kind of secret, and the names that hold secrets.

Every pattern runs in time linear in the text, however often its triggers repeat: a try at one position
reads a bounded stretch or takes what it read with it (see ``_skip``), so no stretch is read again by each
trigger in it. Only ordinary ``re`` syntax is used (no possessive quantifiers or atomic groups, which came
with Python 3.11), so the table compiles on every Python the project supports.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["ASSIGNMENT_KEYS", "REFERENCE", "RULES", "SECRET_ENV_NAME", "SECRET_KEY_NAMES", "TABLE", "Rule"]


@dataclass(frozen=True)
class Rule:
    """One kind of secret: its short snake_case ``kind``, its ``pattern`` and its ``placeholder``.

    When the pattern has named groups starting with ``secret``, only the span of the group that took part
    in a match is replaced (the key of ``password=...`` stays); otherwise the whole match is. A match in
    which such groups exist but none took part is a skip (see ``skip`` in the assignment rules): the text
    it covers holds no secret of this rule and is kept as it is.
    """

    kind: str
    pattern: re.Pattern[str]
    placeholder: str


_BARE_MAX = 512

# Characters that end a bare (unquoted) assigned value, and the value's characters.
_V_END = r" \t\n\r\f\v\"'`,;&()\[\]{}<>|\\"
_V = rf"[^{_V_END}]"
_SYMBOL = r"!@#$%^*+/=~?"
_NOT_VARIABLE = r"(?!\$[A-Za-z_{(])"
# At the end of a run of value characters: not followed by "(" or "[". The class holds no value
# character, so a try at a shorter run fails on one class test.
_NOT_CALLED = rf"(?={_V}*(?:[ \t\n\r\f\v\"'`,;&)\]{{}}<>|\\]|\Z))"


# A bare value is a secret only when it does not read as code or a word: it has a digit or symbol and is
# not an identifier being called or indexed, or it is a long run of letters. Under credential keys it also
# needs a letter or symbol, since `rejected_secret: 1234567` is a count; a password may be all digits.
# The value is the rest of its run of value characters, 6 to _BARE_MAX of them. Each check reads the run
# once and fails without trying shorter runs (a backtracking step costs a class test, never a lookaround).
def _bare(needs_letter: bool) -> str:
    letter = rf"(?=[^{_V_END}A-Za-z{_SYMBOL}]*[A-Za-z{_SYMBOL}])" if needs_letter else ""
    return (
        rf"(?P<secret>{_NOT_VARIABLE}(?!{_V}{{{_BARE_MAX + 1}}})(?={_V}{{6}}){_NOT_CALLED}"
        rf"(?:(?=[^{_V_END}0-9{_SYMBOL}]*[0-9{_SYMBOL}]){letter}|(?=[A-Za-z]{{20}})){_V}+)"
    )


# When the value after a key is no secret, the key word repeated inside that value ("token=token=token...")
# must not start a fresh scan of the same run each time: that is what made redaction quadratic. The skip
# takes the part of the run in which the key word cannot start a match, and the text resumes after it:
# - a run longer than _BARE_MAX: all but its last `tail` to `tail`+8 characters, where a key word starting
#   earlier has a value that is too long; taken in blocks of 512, 64 and 8, each checked once;
# - a run that ends before "(" or "[" (a call or an index): all of it, as every value inside fails too;
# - otherwise, the value failed for lacking a digit or symbol (or a letter), or for being short; a key
#   word further in has a value that is a part of this one, so fails alike, unless its value starts with
#   20 letters or it is the run's last word (its value then starts after the run): the skip stops there.
# What is skipped is exactly what the scan at every position would have found nothing in.
def _skip(key: str, longest: int) -> str:
    tail = _BARE_MAX + longest + 1  # `longest`: the longest spelling of the key word
    blocks = "".join(rf"(?:{_V}{{{size}}}(?={_V}{{{tail}}}))*" for size in (512, 64, 8))
    first = key[0]  # a letter: only where it occurs can a key word start
    stop = rf"{key}(?:[:=](?:[A-Za-z]{{20}}|(?!{_V}))|(?!{_V}))"
    return (
        rf"(?P<skip>(?={_V}{{{tail + 8}}}){blocks}"
        rf"|(?!{_V}{{{_BARE_MAX + 1}}})(?:(?={_V}*[(\[]){_V}+"
        rf"|{_NOT_VARIABLE}(?={_V})[^{_V_END}{first}]*(?:(?!{stop}){first}[^{_V_END}{first}]*)*))"
    )


# Quoted values that open with < [ { or a $VARIABLE are tokenizer special tokens, placeholders or
# references, not secrets; this also keeps a placeholder from being redacted again. Teacher replies are
# code, so stand-ins like "xxxx", "***" or "your-api-key" are left too: a sample is not rejected for them.
_NOT_REFERENCE = r"(?![\[<{]|\$[A-Za-z_{(])"
REFERENCE = re.compile(r"[\[<{]|\$[A-Za-z_{(]")
_STAND_IN = r"(?!(?:[xX*.#_-]+|[Yy]our[A-Za-z_ -]*)\\?[\"'])"
_QUOTED = (
    rf'\\?"(?P<secret_dq>{_NOT_REFERENCE}{_STAND_IN}(?:[^"\\\n]|\\(?!")){{3,}})\\?"'
    rf"|\\?'(?P<secret_sq>{_NOT_REFERENCE}{_STAND_IN}(?:[^'\\\n]|\\(?!')){{3,}})\\?'"
)
_SEPARATOR = r"\\?[\"']?[ \t]*[:=](?!=)[ \t]*"
_PASSWORD_KEY = (r"pass(?:word|wd|phrase)", 10)
# Key words of credential assignments, each with the trigger its rule needs and its longest spelling.
# Whatever comes before the word (OPENAI_API_KEY, db_secret, mytoken) is left out of the pattern and kept.
# Tokenizer configs are full of pad_token, eos_token...: those are not credentials.
_CREDENTIAL_KEYS: tuple[tuple[str, tuple[str, int]], ...] = (
    ("secret", (r"secret(?:[_.-]?(?:access[_.-]?)?key)?", 17)),
    (
        "token",
        (
            r"token"
            + "".join(f"(?<!{kind}_token)" for kind in ("pad", "eos", "bos", "unk", "sep", "cls", "mask")),
            5,
        ),
    ),
    ("credential", (r"credentials?", 11)),
    ("api", (r"api[_.-]?key", 7)),
    ("access", (r"access[_.-]?key", 10)),
    ("private", (r"private[_.-]?key", 11)),
)
ASSIGNMENT_KEYS: tuple[tuple[str, int], ...] = (_PASSWORD_KEY, *(key for _, key in _CREDENTIAL_KEYS))
"""The key words of the assignment rules: (pattern, the length of its longest spelling)."""


def _assignment(key: tuple[str, int], needs_letter: bool = True, skip: bool = True) -> str:
    # Without the skip (for the test that it never changes what a rule finds) a rule is slow, not wrong.
    word, longest = key
    value = f"{_QUOTED}|{_bare(needs_letter)}" + (f"|{_skip(word, longest)}" if skip else "")
    return rf"{word}{_SEPARATOR}(?:{value})"


def _rule(kind: str, pattern: str, triggers: tuple[str, ...], flags: int = 0) -> tuple[Rule, tuple[str, ...]]:
    return Rule(kind, re.compile(pattern, flags | re.ASCII), f"[REDACTED:{kind}]"), triggers


# Patterns open with a literal where they can, since the regex engine then finds candidates by a fast
# substring search; a word boundary is checked by a lookbehind placed after that literal.
_I = re.IGNORECASE
_PRIVATE_KEY_LINE = r"[ A-Z0-9]*PRIVATE KEY(?: BLOCK)?-----"
TABLE: tuple[tuple[Rule, tuple[str, ...]], ...] = (
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
    _rule("openai_key", r"sk-(?<![A-Za-z0-9_-]sk-)(?=[A-Za-z_-]*[0-9])[A-Za-z0-9_-]{20,}", ("sk-",)),
    _rule(
        "github_token",
        r"g(?<![A-Za-z0-9_]g)(?:h[pousr]_[A-Za-z0-9]{30,}|ithub_pat_[A-Za-z0-9_]{30,})",
        ("ghp_", "gho_", "ghs_", "ghu_", "ghr_", "github_pat_"),
    ),
    _rule("gitlab_token", r"glpat-(?<![A-Za-z0-9_-]glpat-)[A-Za-z0-9_-]{20,}", ("glpat-",)),
    _rule(
        "slack_token",
        r"xox(?<![A-Za-z0-9_-]xox)[abprs]-(?=[A-Za-z-]*[0-9])[A-Za-z0-9-]{10,}",
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
        r"hf_(?<![A-Za-z0-9_-]hf_)(?=[a-z0-9]*[A-Z])(?=[A-Z0-9]*[a-z])[A-Za-z0-9]{30,}(?![A-Za-z0-9])",
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
        r"(?P<secret>(?=[A-Za-z._~+/-]*[0-9])[A-Za-z0-9._~+/-]{16,}=*)(?![A-Za-z0-9._~+/=-])",
        ("bearer",),
        _I,
    ),
    _rule("password", _assignment(_PASSWORD_KEY, needs_letter=False), ("passw", "passphrase"), _I),
    *(_rule("credential", _assignment(key), (trigger,), _I) for trigger, key in _CREDENTIAL_KEYS),
)
"""Each rule with its triggers: lowercase substrings, at least one of which occurs in anything it matches."""

RULES: tuple[Rule, ...] = tuple(rule for rule, _ in TABLE)
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

SECRET_KEY_NAMES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("password", re.compile(rf".*{_PASSWORD_KEY[0]}", _I | re.ASCII | re.S)),
    (
        "credential",
        re.compile(rf".*(?:{'|'.join(key for _, (key, _) in _CREDENTIAL_KEYS)})", _I | re.ASCII | re.S),
    ),
)
"""Dict keys that name a secret, by their last word, as the assignment rules read them: (kind, pattern)."""
