"""The trigger pre-filter changes no output: redaction that looks for every trigger in every text (the old
way, ``_Unfiltered``) and the filtered one agree on the triggers found and on what ``redact``, ``clean``,
``redact_path`` and ``redact_obj`` return, for the test tables, realistic messages and random mixes."""

from __future__ import annotations

import base64
import json
import random
import re
import string
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_redaction import HARMLESS, SECRETS
from test_redaction_adversarial import _REPEATS, _adversarial_batch
from test_redaction_props import _carried

from heidi_engine.bus import redaction, secret_rule
from heidi_engine.bus.redaction import RULES, Redactor, _Unfiltered, normal_form, strip_ansi

ENV = {
    "OPENAI_API_KEY": "sk-envKey0123456789abcdefXYZ",
    "DB_PASSWORD": "Hunter-Two-2024",
    "SERVICE_TOKEN": "plainTokenValue9",
    "ODD_TOKEN": "]-odd-token-1",
}
PAIRS = (
    (
        Redactor(env=ENV, extra_secrets=["İstanbul-K3y", "ſecret9"]),
        _Unfiltered(env=ENV, extra_secrets=["İstanbul-K3y", "ſecret9"]),
    ),
    (Redactor(env={}), _Unfiltered(env={})),
)
TRIGGERS = tuple(dict.fromkeys(t for _, triggers in secret_rule.TABLE for t in triggers))
# Characters that Unicode case folding maps onto ASCII letters, or ASCII letters onto others.
TRAPS = ("İ", "ı", "K", "ſ", "ß", "ẞ", "ﬀ", "ǅ", "Å")


def _same(text: str) -> None:
    for new, old in PAIRS:
        for reading in (text, normal_form(text), strip_ansi(text)):
            assert new._present(reading) == old._present(reading), ascii(reading)
        assert new.redact_with_kinds(text) == old.redact_with_kinds(text), ascii(text)
        assert new.redact(text) == old.redact(text)
        assert new.clean(text) == old.clean(text)
        assert new.clean(text, 60) == old.clean(text, 60)
        assert new.redact_path(text) == old.redact_path(text)
    new, old = PAIRS[0]
    assert new.redact_obj({text: [text, (text,)]}) == old.redact_obj({text: [text, (text,)]})


def test_the_rules_fold_case_in_ascii_only() -> None:
    # With re.ASCII, İ, K and ſ match no ASCII letter: a rule matches only where lower() shows its trigger.
    for rule in RULES:
        assert not rule.pattern.flags & re.IGNORECASE or rule.pattern.flags & re.ASCII, rule.kind


def test_no_character_folds_to_or_from_a_mark() -> None:
    # Looking for a mark in the lowered text is sound whatever folds; in the text as it is, this makes it so.
    everything = "".join(map(chr, range(sys.maxunicode + 1)))
    for mark in redaction._MARKS:
        assert everything.lower().count(mark) == everything.upper().count(mark) == 1, mark
        assert re.findall(re.escape(mark), everything, re.IGNORECASE) == [mark]
    assert all(any(mark in t for mark in redaction._MARKS) for t in ("://", "sk-", "ghp_", "hooks.slack.com"))


def test_every_trigger_alone_is_found_in_any_case() -> None:
    new, old = PAIRS[1]
    assert set(new._by_marks[(True,) * len(redaction._MARKS)]) == set(TRIGGERS)
    assert all(
        not any(m in t for m in redaction._MARKS) for t in new._by_marks[(False,) * len(redaction._MARKS)]
    )
    for trigger in TRIGGERS:
        for text in (trigger, trigger.upper(), f"x {trigger.title()} y"):
            assert trigger in new._present(text) and new._present(text) == old._present(text), text


def test_the_tables_of_the_redaction_tests() -> None:
    for _, secret, template in SECRETS:
        for text in (template.format(secret), secret, secret.upper(), template.format(secret).swapcase()):
            _same(text)
    for text in HARMLESS:
        _same(text)
    for unit in _REPEATS:
        _same((unit * (600 // len(unit) + 1))[:600])


def test_a_sample_of_the_adversarial_batch() -> None:
    # The whole 4 MiB batch runs in test_redaction_adversarial; one text in 16 here, at full size.
    for text in _adversarial_batch()[::16]:
        for new, old in PAIRS:
            assert new.clean(text, 500) == old.clean(text, 500)
            assert new.redact_with_kinds(text) == old.redact_with_kinds(text)


_ALNUM = string.ascii_letters + string.digits
_B64 = _ALNUM + "+/"


def _secrets(rng: random.Random) -> list[str]:
    """One carrier of a secret per kind the rules know, freshly drawn."""

    def chars(alphabet: str, n: int) -> str:
        return "".join(rng.choice(alphabet) for _ in range(n - 1)) + rng.choice(string.digits)

    def jwt() -> str:
        head = base64.urlsafe_b64encode(json.dumps({"alg": "HS256"}).encode()).rstrip(b"=").decode()
        body = base64.urlsafe_b64encode(json.dumps({"sub": chars(_ALNUM, 8)}).encode()).rstrip(b"=").decode()
        return f"{head}.{body}.{chars(_ALNUM + '-_', 43)}"

    key = rng.choice(["password", "passwd", "passphrase", "token", "api_key", "apikey", "api-key",
                      "access_key", "private_key", "credentials", "secret", "client_secret", "secret_key"])  # fmt: skip
    return [
        "sk-" + chars(_ALNUM, 48),
        "sk-proj-" + chars(_ALNUM + "-_", 100),
        "sk-ant-api03-" + chars(_ALNUM + "-_", 90),
        f"gh{rng.choice('pousr')}_" + chars(_ALNUM, 36),
        "github_pat_" + chars(_ALNUM + "_", 82),
        "glpat-" + chars(_ALNUM + "-_", 20),
        f"xox{rng.choice('abprs')}-{chars(string.digits, 12)}-{chars(_ALNUM, 24)}",
        f"https://hooks.slack.com/services/T{chars(_ALNUM, 8)}/B{chars(_ALNUM, 8)}/{chars(_ALNUM, 24)}",
        rng.choice(["AKIA", "ASIA", "ABIA", "ACCA"]) + chars(string.ascii_uppercase + "234567", 16),
        f"aws_secret_access_key = {chars(_B64, 40)}",
        "AIza" + chars(_ALNUM + "-_", 35),
        rng.choice(["sk_live_", "sk_test_", "rk_live_", "rk_test_"]) + chars(_ALNUM, 24),
        "hf_" + chars(string.ascii_uppercase, 17) + chars(string.ascii_lowercase, 17),
        jwt(),
        f"Authorization: {rng.choice(['Bearer', 'token', 'Basic', 'bearer'])} {chars(_ALNUM + '._~', 32)}",
        f'"Bearer {chars(_ALNUM, 24)}"',
        f"-----BEGIN RSA PRIVATE KEY-----\n{chars(_B64, 64)}\n-----END RSA PRIVATE KEY-----",
        f"postgres://{chars(string.ascii_lowercase, 6)}:{chars(_ALNUM + '!%*', 14)}@db.internal:5432/x",
        rng.choice(["{k}={v}", "{k}: {v}", '"{k}": "{v}"', "{k}='{v}'", "MY_{K}={v}"]).format(
            k=key, K=key.upper(), v=chars(_ALNUM + "!#%*+", 16)
        ),
        f"export OPENAI_API_KEY={ENV['OPENAI_API_KEY']}",
        f"db: {ENV['DB_PASSWORD']} / {ENV['SERVICE_TOKEN']}",
    ]


_LINES = (
    "round {n} generate: {n}/128 samples done, teacher latency 1.8s, queue ok",
    "train step {n}/1000 loss=0.8123 lr=1.8e-4 grad_norm=0.93 tokens/s=5120",
    "teacher http://127.0.0.1:8000/v1 answered 200 in 1.2s, {n} output tokens",
    "validate: {n} ok, 3 rejected_schema, 1 rejected_dedup",
    "eval pass@1 0.412 on {n} problems",
    "模型训练 第{n}轮 完成，损失 0.81",
    "naïve café résumé {n} 🚀 done",
    "ИСТАНБУЛ İstanbul ıi ſtraße STRASSE Kelvin {n}K",
)
_DRESS = (
    lambda s: s,
    lambda s: f"\x1b[31m{s}\x1b[0m",
    lambda s: f"\x1b]8;;https://x.io\x07{s}\x1b]8;;\x07",
    str.upper,
    str.lower,
    lambda s: json.dumps({"msg": s}),
    lambda s: s.replace("-", "\u2010").replace("_", "\uff3f").replace(":", "\uff1a").replace(".", "\u3002"),
    lambda s: s[: len(s) // 2] + "\u200b" + s[len(s) // 2 :],
    lambda s: "".join(chr(0xE0000 + ord(c)) if " " < c < "\x7f" else c for c in s),
)


def _corpus(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    texts = []
    for n in range(count):
        line = rng.choice(_LINES).format(n=n)
        if n % 4:
            secret = rng.choice(_secrets(rng))
            secret = rng.choice(_DRESS)(secret) if n % 3 == 0 else secret
            line = rng.choice([f"{line} {secret}", f"{secret} {line}", f"{line}: {secret}\n{line}"])
        texts.append(rng.choice(_DRESS[:6])(line) if n % 5 == 0 else line)
    return texts


def test_the_corpus_holds_every_kind() -> None:
    kinds = {kind for text in _corpus(400, 1) for kind in PAIRS[0][0].scan(text)}
    assert kinds >= {rule.kind for rule in RULES} | {"env_secret"}


@pytest.mark.parametrize("seed", [1, 2])
def test_a_corpus_of_realistic_messages(seed: int) -> None:
    for text in _corpus(1000, seed):
        _same(text)


def test_the_module_functions(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(redaction, "_default", None)
    old = _Unfiltered()
    for text in _corpus(200, 3):
        assert redaction.redact(text) == old.redact(text)
        assert redaction.clean(text, 80) == old.clean(text, 80)
        assert redaction.redact_path(text) == old.redact_path(text)
        assert redaction.scan(text) == old.scan(text)


def _spellings(trigger: str) -> list[str]:
    # A trigger as written, in upper case, and with one letter swapped for a trap that folds to it.
    swaps = {"i": "İı", "k": "K", "s": "ſ", "a": "Å"}
    out = [trigger, trigger.upper()]
    out += [trigger[:i] + trap + trigger[i + 1 :] for i, c in enumerate(trigger) for trap in swaps.get(c, "")]
    return out


_FRAGMENTS = st.sampled_from(
    [s for t in TRIGGERS for s in _spellings(t)]
    + [
        "=", ": ", "://", "u:p@", "@", '"', "'", " ", "\n", "(", "$", "-", "_", ":", ".", "/", "+",
        "word=", "_key=", "-key: ", "access_", "Bearer ", "Authorization: ", "passw", "ord=", "-----END",
        "[REDACTED:", "]", "abc123XYZ", "0123456789abcdef", "QUJDREVGR0hJSktM", "a1b2c3d4e5f6g7h8i9j0",
        "\x1b[31m", "\u200b", "\u00ad", "\U000e0073\U000e006b\U000e002d", "\u2010", "\uff3f", "\uff1a",
        *ENV.values(), "İstanbul-K3y", "ſecret9",
    ]
    + list(TRAPS)
)  # fmt: skip
_MIXES = st.lists(_FRAGMENTS | st.text(alphabet="".join(TRAPS) + "-_:.=aAkKsSiI19 ", max_size=5), max_size=30)


@given(_MIXES.map("".join))
@settings(max_examples=400, deadline=None, database=None)
def test_random_mixes_of_triggers_punctuation_and_case_folding_traps(text: str) -> None:
    _same(text)


@given(_MIXES.map("".join), _carried, _MIXES.map("".join))
@settings(max_examples=150, deadline=None, database=None)
def test_random_mixes_around_a_secret(before: str, carried: tuple[str, str], after: str) -> None:
    _same(before + carried[1] + after)
