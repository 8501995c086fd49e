"""Property tests for redaction: idempotence, no injected secret survives, no input makes it fail."""

from __future__ import annotations

import base64
import json
import re
import string

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from heidi_engine.bus import secret_rule
from heidi_engine.bus.redaction import RULES, Redactor, normal_form, strip_ansi

ALNUM = string.ascii_letters + string.digits
UPPER32 = string.ascii_uppercase + "234567"
REDACTOR = Redactor(env={"MY_SERVICE_TOKEN": "svc-Tok3n-0123456789", "DB_PASSWORD": "Vx8#kq2LmZ"})
_FLAGS = re.IGNORECASE | re.ASCII


def _chars(alphabet: str, size: int, max_size: int | None = None) -> st.SearchStrategy[str]:
    return st.text(alphabet=alphabet, min_size=size, max_size=size if max_size is None else max_size)


def _with_digit(body: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    # Real keys are random enough to hold a digit; the rules rely on it to leave words like sk-learn alone.
    return st.tuples(body, st.sampled_from(string.digits), st.integers(0, 1000)).map(
        lambda t: t[0][: t[2] % (len(t[0]) + 1)] + t[1] + t[0][t[2] % (len(t[0]) + 1) :]
    )


def _with_letter(body: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.tuples(body, st.sampled_from(string.ascii_letters)).map(lambda t: t[1] + t[0])


def _b64url(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


_jwt = st.builds(
    lambda claims, sig: f"{_b64url({'alg': 'HS256', 'typ': 'JWT'})}.{_b64url(claims)}.{sig}",
    st.dictionaries(st.text(ALNUM, min_size=1, max_size=6), st.integers() | st.text(max_size=8), max_size=4),
    _chars(ALNUM + "-_", 43),
)

# (the secret that must vanish, the text that carries it)
_carried: st.SearchStrategy[tuple[str, str]] = st.one_of(
    _with_digit(_chars(ALNUM, 48)).map(lambda s: ("sk-" + s, "sk-" + s)),
    _with_digit(_chars(ALNUM + "-_", 60, 120)).map(lambda s: ("sk-proj-" + s, "sk-proj-" + s)),
    _chars(ALNUM + "-_", 80, 95).map(lambda s: ("sk-ant-api03-" + s, "sk-ant-api03-" + s)),
    st.tuples(st.sampled_from("pousr"), _chars(ALNUM, 36)).map(lambda t: (f"gh{t[0]}_{t[1]}",) * 2),
    _chars(ALNUM + "_", 82).map(lambda s: ("github_pat_" + s, "github_pat_" + s)),
    _chars(ALNUM + "-_", 20).map(lambda s: ("glpat-" + s, "glpat-" + s)),
    st.tuples(st.sampled_from("abpr"), _chars(string.digits, 12), _chars(ALNUM, 24)).map(
        lambda t: (f"xox{t[0]}-{t[1]}-{t[2]}",) * 2
    ),
    _chars(ALNUM, 24).map(lambda s: (s, f"https://hooks.slack.com/services/T0AB12CD/B0EF34GH/{s}")),
    st.tuples(st.sampled_from(["AKIA", "ASIA"]), _chars(UPPER32, 16)).map(lambda t: (t[0] + t[1],) * 2),
    _chars(ALNUM + "/+", 40).map(lambda s: (s, f"aws_secret_access_key = {s}")),
    _chars(ALNUM + "-_", 35).map(lambda s: ("AIza" + s, "AIza" + s)),
    st.tuples(st.sampled_from(["sk_live_", "rk_live_", "sk_test_"]), _chars(ALNUM, 24, 99)).map(
        lambda t: (t[0] + t[1],) * 2
    ),
    _jwt.map(lambda s: (s, s)),
    _with_digit(_chars(ALNUM + "-._~", 20, 60)).map(lambda s: (s, f"Authorization: Bearer {s}")),
    _with_digit(_chars(ALNUM, 20, 40)).map(lambda s: (s, f'"Bearer {s}"')),
    _chars(ALNUM + "+/", 64).map(
        lambda s: (s, f"-----BEGIN RSA PRIVATE KEY-----\n{s}\n-----END RSA PRIVATE KEY-----")
    ),
    st.tuples(_chars(string.ascii_lowercase, 3, 10), _with_digit(_chars(ALNUM + "!%*", 8, 20))).map(
        lambda t: (t[1], f"postgres://{t[0]}:{t[1]}@db.internal:5432/x")
    ),
    st.tuples(
        st.sampled_from(["password", "passwd", "api_key", "apikey", "secret", "token", "access_token"]),
        st.sampled_from(["{k}={v}", "{k}: {v}", '"{k}": "{v}"', "{k}='{v}'"]),
        _with_letter(_with_digit(_chars(ALNUM + "!#%*+", 8, 24))),
    ).map(lambda t: (t[2], t[1].format(k=t[0], v=t[2]))),
    st.tuples(_chars(string.ascii_uppercase, 17), _chars(string.ascii_lowercase, 17)).map(
        lambda t: ("hf_" + t[0] + t[1], "hf_" + t[0] + t[1])
    ),
    _chars(string.digits, 6, 12).map(lambda s: (s, f"password: {s}")),
    st.just(("svc-Tok3n-0123456789", "svc-Tok3n-0123456789")),
    st.just(("Vx8#kq2LmZ", "Vx8#kq2LmZ")),
)

# Pieces that put rules next to each other and next to their own placeholders.
_FRAGMENTS = st.sampled_from(
    [
        "password=", "token: ", '"api_key": "', "Bearer ", "Authorization: Bearer ", "sk-", "ghp_", "hf_",
        "://", "u:p@", "@", ":", "=", '"', "'", " ", "\n", "-----BEGIN RSA PRIVATE KEY-----",
        "-----END RSA PRIVATE KEY-----", "[REDACTED:openai_key]", "[REDACTED:", "]", "AKIA", "eyJ", "abc123XYZ",
        "0123456789abcdef", "svc-Tok3n-", "0123456789", "\x1b[31m", "https://", "pad_token", "secret",
    ]
)  # fmt: skip
_noisy_text = st.lists(_FRAGMENTS | st.text(max_size=6), max_size=24).map("".join)


@given(st.text(), _carried, st.text())
@settings(max_examples=300)
def test_an_injected_secret_never_survives(before: str, carried: tuple[str, str], after: str) -> None:
    secret, carrier = carried
    assume(secret not in before and secret not in after)  # random text may hold the same digits
    out = REDACTOR.redact(f"{before} {carrier} {after}")
    assert secret not in out
    assert REDACTOR.scan(f"{before} {carrier} {after}")


@given(st.text() | _noisy_text)
@settings(max_examples=300)
def test_redaction_is_idempotent(text: str) -> None:
    once = REDACTOR.redact(text)
    assert REDACTOR.redact(once) == once


@given(_noisy_text, _carried, _noisy_text)
def test_redaction_is_idempotent_around_secrets(before: str, carried: tuple[str, str], after: str) -> None:
    once = REDACTOR.redact(before + carried[1] + after)
    assert REDACTOR.redact(once) == once


@given(_noisy_text)
def test_the_fast_path_never_skips_a_match(text: str) -> None:
    if not REDACTOR._may_hold_secret(text):
        assert all(rule.pattern.search(text) is None for rule in RULES)


@given(st.text(), st.integers(1, 600))
def test_clean_never_fails_and_respects_the_cap(text: str, max_len: int) -> None:
    out = REDACTOR.clean(text, max_len)
    assert len(out) <= max_len
    assert all(ch in "\n\t" or (ord(ch) >= 0x20 and not 0x7F <= ord(ch) <= 0x9F) for ch in out)


@given(st.text())
def test_strip_ansi_keeps_printable_text(text: str) -> None:
    printable = "".join(
        ch for ch in text if ch in "\n\t" or (ord(ch) >= 0x20 and not 0x7F <= ord(ch) <= 0x9F)
    )
    assert strip_ansi(printable) == printable


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text() | _noisy_text,
    lambda children: (
        st.lists(children, max_size=4)
        | st.tuples(children, children)
        | st.dictionaries(st.text(max_size=8) | _FRAGMENTS, children, max_size=4)
    ),
    max_leaves=20,
)


@given(_json)
def test_redact_obj_never_fails_and_is_idempotent(obj: object) -> None:
    once = REDACTOR.redact_obj(obj)
    assert REDACTOR.redact_obj(once) == once


# Runs of value characters around 512 long, full of key words: where the assignment rules skip.
_RUN_UNITS = st.sampled_from(
    ["token=", "token:", "a1", "ab", "x", "password=", "secret_key:", "$", "=", "Z9"]
)
_runs = st.lists(
    _FRAGMENTS | st.tuples(_RUN_UNITS, st.integers(1, 130)).map(lambda t: t[0] * t[1]), max_size=10
).map("".join)
_ASSIGNMENT_RULES = [
    (rule, re.compile(secret_rule._assignment(key, needs_letter=rule.kind != "password", skip=False), _FLAGS))
    for (rule, _), key in zip(
        secret_rule.TABLE[-len(secret_rule.ASSIGNMENT_KEYS) :], secret_rule.ASSIGNMENT_KEYS, strict=True
    )
]


def _secrets_found(pattern: re.Pattern[str], text: str) -> list[tuple[int, int]]:
    return [m.span(m.lastgroup) for m in pattern.finditer(text) if m.lastgroup and m.lastgroup != "skip"]


def test_the_assignment_rules_are_the_table_s_last() -> None:
    assert [rule.kind for rule, _ in _ASSIGNMENT_RULES] == ["password"] + ["credential"] * 6
    assert all(rule.pattern.pattern != reference.pattern for rule, reference in _ASSIGNMENT_RULES)


@given(_runs)
@settings(max_examples=300, deadline=None)
def test_a_skip_never_changes_what_an_assignment_rule_finds(text: str) -> None:
    for rule, without_skips in _ASSIGNMENT_RULES:
        assert _secrets_found(rule.pattern, text) == _secrets_found(without_skips, text)


_INVISIBLE = st.sampled_from(["\u200b", "\u00ad", "\u200c", "\u200d", "\u2060", "\ufeff", "\u202e", "\ufe0f"])


@given(st.text(), _carried, st.lists(st.tuples(st.integers(0, 200), _INVISIBLE), min_size=1, max_size=4))
@settings(max_examples=300)
def test_invisible_characters_inside_a_secret_never_let_it_through(
    before: str, carried: tuple[str, str], marks: list[tuple[int, str]]
) -> None:
    secret, carrier = carried
    at = carrier.index(secret)
    for position, mark in sorted(marks, reverse=True):
        cut = at + position % (len(secret) + 1)
        carrier = carrier[:cut] + mark + carrier[cut:]
    assume(secret not in normal_form(before))
    out = REDACTOR.redact(f"{before} {carrier} ")
    assert secret not in normal_form(out)


@given(st.lists(_FRAGMENTS | _INVISIBLE | st.text(max_size=4), max_size=24).map("".join))
@settings(max_examples=300)
def test_redaction_is_idempotent_with_invisible_characters(text: str) -> None:
    once = REDACTOR.redact(text)
    assert REDACTOR.redact(once) == once
