"""Redaction against corpora of fake secrets and of harmless look-alikes, plus env, ANSI, clean, redact_obj."""

from __future__ import annotations

import dataclasses
from collections import namedtuple

import pytest

from heidi_engine.bus import redaction
from heidi_engine.bus.redaction import RULES, SECRET_ENV_NAME, Redactor, Rule, strip_ansi

_RSA_BODY = (
    "MIIEowIBAAKCAQEA3zkyJJlixoVyAAWa646hfPN4fg7SnRwLY//XKYN02b10/BGt\n"
    "17nKZQOVImn9Zp9jdu5xh5c3/V9y+NUcSskbbQxI1BoeXsnmoDkoVKhhXu8Qn8G/\n"
    "qeJWNwEojymz1z9qWj9KfzjsQGMrb9h/ImB/LK777pzNk8cL6j5IXAAjQ2pLm0=="
)
_PEM_SECRET = "qeJWNwEojymz1z9qWj9KfzjsQGMrb9h"

# (expected kind, the secret that must vanish, the text it appears in)
SECRETS: list[tuple[str, str, str]] = [
    ("openai_key", "sk-u8jzPde0IgxLd6GncfBAepfJBd0Kh8oOOL8dKLzdocJ2isAj", "retrying with key {} after a 429"),
    (
        "openai_key",
        "sk-proj-IhKtJ0RlgLKOmxgJTeKdNnFRIBXuDL7DxtpYlSXp_fKtHF4vUCsMehGAkWvj7-FAc9QeWJKY40uvSwMFLZDe1f8rESQe",
        'teacher config: {{"api_key": "{}", "model": "gpt-4o-mini"}}',
    ),
    (
        "anthropic_key",
        "sk-ant-api03-hN5KXSc7Tvo_hBKqFYY_kv5ZJr3J1TWDtkwtDDb-xHKas1VOqg6YYZYn9ZhyAA",
        "export ANTHROPIC_API_KEY={} before starting",
    ),
    ("github_token", "ghp_enCkhvMdgaKjIg8xNbe3nNyjOq9wMxEhh2FD", "git push with {} was rejected"),
    ("github_token", "gho_EEtfjgVvVqE1SkHbn88HxjSI6bWHtP3fS2qH", "oauth token {} expired"),
    ("github_token", "ghs_x6kwXoIIXGvOoNZYW2mZp0zVZomHFwUbbYrE", "the app installation used {}."),
    ("github_token", "ghu_qmSM9wCZ7Uw9xfogoEmvnEN5N1aE6PwZPf1Q", "user-to-server token ({}) refreshed"),
    ("github_token", "ghr_h6yYTWmE4lBYOvfZ8UzDzV8fUkkibjL5DZPj", "refresh with {}"),
    (
        "github_token",
        "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",
        "fine-grained PAT {} has read access",
    ),
    ("gitlab_token", "glpat-FyJfm5di4PzJ59FHz5r1", "the mirror job authenticates with {}"),
    ("slack_token", "xoxb-167513613412-5242731672326-GzvAmwufUxbvJDCTbyvHNsG9", "bot token={}"),
    (
        "slack_token",
        "xoxp-113114402426-462889751402-6140141931417-0ad84173581569969e58b081006f7e3d",
        "posting as user {} to #training",
    ),
    ("slack_token", "xoxa-2-QFI14zGtSnovm14TUOizwd1iaeOV4q", "workspace token '{}'"),
    ("slack_token", "xoxr-BkdfQ1y3GQsMpSscDlkrCaqx9vJupc94tnwlavyf", "refresh {} now"),
    (
        "slack_webhook",
        "T4R6MP6AF/BQFJZCZBTTO/fL9H2WjQ5TY4MyWuUFjsUNPj",
        "alerts go to https://hooks.slack.com/services/{} on failure",
    ),
    ("aws_access_key_id", "AKIAC3IBOFBCIXGY4DBP", "boto3 picked up AKIA key {} from the profile"),
    ("aws_access_key_id", "ASIA7QA5EFE6QEQPNO57", "temporary credentials: {} (expires in 1h)"),
    ("aws_secret_key", "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", "[default]\naws_secret_access_key = {}\n"),
    (
        "aws_secret_key",
        "pZ4mQ8rT2vX6yB0nC3fH7jK1lD5gS9wE+aU/oI2e",
        '{{"SecretAccessKey": "{}", "Region": "x"}}',
    ),
    ("google_api_key", "AIzalsHUqJoUD_-Ydua-5ZMs1SWOpQaPRYpzbLG", "maps call with key={}&q=paris"),
    ("stripe_key", "sk_live_xezy3Lex7BWr2drgd1QsO7jp", "charge failed with {}: card declined"),
    ("stripe_key", "rk_live_rBGumXxY9B4bZWOz648JJnUf", "restricted key {} lacks scope"),
    ("stripe_key", "sk_test_d7UACNWiP3sFd67JikEAvstq", "use {} in CI"),
    (
        "jwt",
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJ1c2VyXzg4MTIiLCJpYXQiOjE3MTYyMzkwMjIsInNjb3BlIjoiYWRtaW4ifQ"
        ".HZEM9YpvujA_C5Q52ryFlwRlOEVHzc0X0AWIRh_JUqB",
        "session cookie jwt={} set",
    ),
    (
        "bearer_token",
        "fr5pyzPCB9t2039bicBTW5ZE9LFaez77",
        "curl -H 'Authorization: Bearer {}' https://api.x.io",
    ),
    ("bearer_token", "Zq8Lm2Xp4Nc6Vb0Rt", '{{"headers": {{"Authorization": "Bearer {}"}}}}'),
    ("bearer_token", "a8F3kD93jfLq0ZpX7wM2", 'the client sent "Bearer {}" twice'),
    ("bearer_token", "dXNlcjpodW50ZXIy", "Authorization: Basic {}"),
    (
        "private_key",
        _PEM_SECRET,
        "key:\n-----BEGIN RSA PRIVATE KEY-----\n{}\n-----END RSA PRIVATE KEY-----\nok",
    ),
    (
        "private_key",
        _PEM_SECRET,
        "-----BEGIN OPENSSH PRIVATE KEY-----\n{}\n-----END OPENSSH PRIVATE KEY-----",
    ),
    ("private_key", _PEM_SECRET, "-----BEGIN EC PRIVATE KEY-----\n{}\n-----END EC PRIVATE KEY-----"),
    ("private_key", _PEM_SECRET, "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY----- trailing"),
    (
        "private_key",
        _PEM_SECRET,
        "-----BEGIN ENCRYPTED PRIVATE KEY-----\n{}\n-----END ENCRYPTED PRIVATE KEY-----",
    ),
    (
        "private_key",
        _PEM_SECRET,
        "-----BEGIN PGP PRIVATE KEY BLOCK-----\n\n{}\n=Xy4Z\n-----END PGP PRIVATE KEY BLOCK-----",
    ),
    ("private_key", _PEM_SECRET, "reply was cut: -----BEGIN RSA PRIVATE KEY-----\n{}"),
    ("url_credentials", "trainer:WTN3lg8zV5yPU8", "connecting to postgres://{}@db.internal:5432/runs"),
    ("url_credentials", ":Rk29vQz81LmX", "cache at redis://{}@cache.local:6379/0"),
    ("url_credentials", "bob:Zr8Kp2Lm9Qx", "push failed for https://{}@git.example.com/org/repo.git"),
    ("password", "Xk9#mQ2vL7pw", "config dump: password={} host=db.internal"),
    ("password", "hunter22", "db passwd: {}"),
    ("password", "s3cr3t-Pa55", '{{"user": "admin", "password": "{}"}}'),
    ("password", "correct horse battery staple", "passphrase: '{}'"),
    ("password", "Qw3rty!Qw3rty", "MY_SERVICE_PASSWORD={}"),
    ("credential", "a1b2c3d4e5f6g7h8", "calling with api_key={} and retries=3"),
    ("credential", "9f8e7d6c5b4a3210", "apikey: {}"),
    ("credential", "tok3n-V4lue-xyz", "secret={}"),
    ("credential", "ya29.a0AfH6SMBx8q", "token: {}"),
    ("credential", "EAAGm0PX4ZCpsBAKZCZ", "callback?access_token={}&state=abc"),
    ("credential", "cs_9XkQ2mP7vR4t", '{{"client_secret": "{}"}}'),
    ("credential", "QmFzZTY0U2VjcmV0", "api-key = '{}'"),
    ("huggingface_token", "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", "huggingface-cli login --token {}"),
]

HARMLESS: list[str] = [
    "task-1234567890abcdefghij",
    "digest sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08 verified",
    "checked out 3f786850e387550fdab836ed7e6dc881de23001b (HEAD)",
    "run 123e4567-e89b-12d3-a456-426614174000 finished",
    "the payload SGVsbG8gd29ybGQsIHRoaXMgaXMgYSB0ZXN0Lg== decodes to a greeting",
    "import sk-learn style estimators; pip install sk-learn-extra",
    "skip_tokens=3",
    "the password is required for login, please enter your password:",
    "token = tokenizer(text)",
    "api_key = os.environ['OPENAI_API_KEY']",
    'api_key = os.environ.get("OPENAI_API_KEY")',
    "secret = secrets.token_hex(16)",
    "password = getpass.getpass()",
    "def check(token: str) -> bool:",
    "api_key: str | None = None",
    "if token == expected_token: return",
    "/home/user/.cache/huggingface/hub/models--HuggingFaceTB--SmolLM2-135M/snapshots/main/config.json",
    "downloading https://huggingface.co/HuggingFaceTB/SmolLM2-135M-Instruct/resolve/main/model.safetensors",
    "teacher at http://127.0.0.1:8000/v1/chat/completions answered 200",
    "cloned ssh://git@github.com/org/repo.git",
    "run_20240215_123456_abc12345",
    "max_tokens: 512, max_new_tokens=256, input_tokens=123456 output_tokens=654321",
    '{"pad_token": "<pad>", "eos_token": "</s>", "unk_token": "[UNK]", "bos_token": "<|im_start|>"}',
    "eos_token_id: 50256, pad_token_id=0",
    "train step 350/1000 loss=0.8123 tokens/s=5120 eta 4m12s",
    "validate: rejected_secret: 3, secret: openai_key,github_token",
    "AKIA is the prefix of AWS access key ids",
    "Authorization header missing (401)",
    "Bearer tokens expire after 3600 seconds",
    "hf_hub_download(repo_id='HuggingFaceTB/SmolLM2-135M')",
    "ghp_ marks GitHub personal access tokens",
    "mail alice@example.com about it",
    "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIU\n-----END CERTIFICATE-----",
    "eyJ is how base64 JSON begins",
    "xoxo-and-hugs-from-the-team-2024",
    "timezone Asia/Tokyo, region ASIA",
    "eval pass@1 = 0.412, pass@10 = 0.61",
    "learning_rate=2e-4 lora_alpha=32 seed=1234567",
    "token_count=1234567 secret_kinds=[]",
    "2024-02-15T12:34:56Z round 3 generate stage_end",
    "risk-assessment-framework-for-enterprise-2024",
    "TEACHER_API_KEY_ENV=OPENAI_API_KEY",
    'API_KEY = "your-api-key-here"  # placeholder in generated code',
    'headers = {"Authorization": f"Bearer {token}", "X-Api-Key": "***"}',
    'password = input("Password: ")',
    'token = jwt.encode({"sub": user_id}, key, algorithm="HS256")',
]


def _redactor() -> Redactor:
    return Redactor(env={})


@pytest.mark.parametrize(
    ("kind", "secret", "template"), SECRETS, ids=[f"{k}-{i}" for i, (k, _, _) in enumerate(SECRETS)]
)
def test_secret_is_redacted(kind: str, secret: str, template: str) -> None:
    text = template.format(secret)
    assert secret in text
    out, kinds = _redactor().redact_with_kinds(text)
    assert secret not in out
    assert f"[REDACTED:{kind}]" in out
    assert kind in kinds
    assert _redactor().scan(text) == kinds


def test_corpus_covers_every_kind_of_the_table() -> None:
    assert len(SECRETS) >= 30
    assert {kind for kind, _, _ in SECRETS} == {rule.kind for rule in RULES}


@pytest.mark.parametrize("text", HARMLESS)
def test_harmless_text_passes_unchanged(text: str) -> None:
    assert _redactor().redact(text) == text
    assert _redactor().scan(text) == frozenset()


def test_harmless_corpus_is_large_enough() -> None:
    assert len(HARMLESS) >= 30


def test_context_is_kept_and_only_the_value_replaced() -> None:
    r = _redactor()
    assert r.redact("postgres://trainer:WTN3lg8zV5yPU8@db.internal:5432/runs") == (
        "postgres://[REDACTED:url_credentials]@db.internal:5432/runs"
    )
    assert r.redact('{"password": "s3cr3t-Pa55"}') == '{"password": "[REDACTED:password]"}'
    assert r.redact("Authorization: Bearer fr5pyzPCB9t2039bicBTW5ZE9LFaez77") == (
        "Authorization: Bearer [REDACTED:bearer_token]"
    )
    assert r.redact("https://hooks.slack.com/services/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") == (
        "https://hooks.slack.com/services/[REDACTED:slack_webhook]"
    )


def test_several_secrets_in_one_message_are_all_found() -> None:
    text = " and ".join(template.format(secret) for _, secret, template in SECRETS[:12])
    out, kinds = _redactor().redact_with_kinds(text)
    for _, secret, _ in SECRETS[:12]:
        assert secret not in out
    assert kinds == {kind for kind, _, _ in SECRETS[:12]}


def test_redaction_is_idempotent_on_the_corpora() -> None:
    r = _redactor()
    for text in [template.format(secret) for _, secret, template in SECRETS] + HARMLESS:
        once = r.redact(text)
        assert r.redact(once) == once
        assert r.scan(once) == frozenset(), once


def test_no_rule_matches_a_placeholder_even_in_an_assignment() -> None:
    r = Redactor(env={"OPENAI_API_KEY": "sk-envKey0123456789abcdefXYZ"}, extra_secrets=["extra-Secret-42"])
    placeholders = [rule.placeholder for rule in RULES] + [
        "[REDACTED:env:OPENAI_API_KEY]",
        "[REDACTED:extra_secret]",
    ]
    for placeholder in placeholders:
        for text in (
            placeholder,
            f"password={placeholder}",
            f'"token": "{placeholder}"',
            f"Bearer {placeholder}",
        ):
            assert r.redact(text) == text
            assert all(rule.pattern.search(placeholder) is None for rule in RULES)


def test_every_match_holds_one_of_its_rule_triggers() -> None:
    # The fast path skips a rule when none of its triggers occurs: that must never hide a match.
    texts = [template.format(secret) for _, secret, template in SECRETS] + HARMLESS
    for rule, triggers in redaction._TABLE:
        for text in texts:
            for match in rule.pattern.finditer(text):
                assert any(t in match.group().lower() for t in triggers), (rule.kind, match.group())


def test_rule_is_a_frozen_record_and_placeholders_name_their_kind() -> None:
    rule = RULES[0]
    assert isinstance(rule, Rule)
    with pytest.raises(dataclasses.FrozenInstanceError):
        rule.kind = "other"  # type: ignore[misc]
    for rule in RULES:
        assert rule.placeholder == f"[REDACTED:{rule.kind}]"
        assert rule.kind.isidentifier() and rule.kind == rule.kind.lower()


@pytest.mark.parametrize(
    "name",
    ["OPENAI_API_KEY", "HF_TOKEN", "MY_SERVICE_PASSWORD", "DB_PASSWD", "AWS_SECRET_ACCESS_KEY", "GITHUB_TOKEN",
     "GOOGLE_CREDENTIALS", "BASIC_AUTH", "SLACK_BOT_TOKEN_2", "openai_api_key", "MY_APIKEY", "DB_PASS"],
)  # fmt: skip
def test_secret_env_names(name: str) -> None:
    assert SECRET_ENV_NAME.match(name)


@pytest.mark.parametrize(
    "name",
    ["HOME", "PATH", "PWD", "TOKENIZERS_PARALLELISM", "MAX_TOKENS", "SSH_AUTH_SOCK", "GIT_AUTHOR_NAME",
     "KEYBOARD_LAYOUT", "HF_TOKEN_PATH", "AWS_SHARED_CREDENTIALS_FILE", "TEACHER_API_KEY_ENV", "MONKEY"],
)  # fmt: skip
def test_ordinary_env_names(name: str) -> None:
    assert not SECRET_ENV_NAME.match(name)


def test_env_secret_values_are_redacted_literally() -> None:
    env = {
        "MY_SERVICE_PASSWORD": "correcthorsebattery",
        "HF_TOKEN": "  hf_local_dev_token_value\n",
        "SHORT_TOKEN": "abc",
        "GOOGLE_APPLICATION_CREDENTIALS": "/home/x/creds.json",
        "EDITOR": "vim-but-longer",
        "HOME": "/home/x",
    }
    r = Redactor(env=env)
    out, kinds = r.redact_with_kinds("logged in with correcthorsebattery and hf_local_dev_token_value today")
    assert out == "logged in with [REDACTED:env:MY_SERVICE_PASSWORD] and [REDACTED:env:HF_TOKEN] today"
    assert kinds == {"env_secret"}
    for harmless in ("abc is short", "reading /home/x/creds.json", "editor vim-but-longer"):
        assert r.redact(harmless) == harmless


def test_env_value_inside_a_placeholder_is_skipped_to_stay_idempotent() -> None:
    r = Redactor(env={"DB_PASSWORD": "password", "API_TOKEN": "REDACTED:openai"})
    text = "key sk-u8jzPde0IgxLd6GncfBAepfJBd0Kh8oOOL8dKLzdocJ2isAj"
    once = r.redact(text)
    assert once == "key [REDACTED:openai_key]"
    assert r.redact(once) == once


def test_env_defaults_to_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AT_UNIT_SERVICE_TOKEN", "zz-unit-test-value-91")
    assert Redactor().redact("v=zz-unit-test-value-91") == "v=[REDACTED:env:AT_UNIT_SERVICE_TOKEN]"


def test_extra_secrets() -> None:
    r = Redactor(env={}, extra_secrets=["Plain words secret"])
    assert r.redact("say Plain words secret now") == "say [REDACTED:extra_secret] now"
    with pytest.raises(ValueError, match="extra secret too short"):
        Redactor(env={}, extra_secrets=["ab "])
    with pytest.raises(TypeError, match="extra secret must be str"):
        Redactor(env={}, extra_secrets=[b"bytes-secret"])  # type: ignore[list-item]


def test_bad_input_is_named() -> None:
    with pytest.raises(TypeError, match="redaction needs str, got bytes"):
        _redactor().redact(b"sk-abc")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="environment variable X_TOKEN must be a str"):
        Redactor(env={"X_TOKEN": 12345678})  # type: ignore[dict-item]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("\x1b[1;31mred\x1b[0m plain", "red plain"),
        ("\x1b]0;window title\x07after", "after"),
        ("\x1b]8;;https://x.io\x1b\\link\x1b]8;;\x1b\\", "link"),
        ("progress 10%\r\x1b[2Kprogress 20%", "progress 10%progress 20%"),
        ("keep\ttabs\nand lines", "keep\ttabs\nand lines"),
        ("bell\x07 nul\x00 del\x7f c1\x9b31m", "bell nul del c1"),
        ("\x1b(Bcharset \x1b=keypad", "charset keypad"),
        ("\x1bPdcs payload\x1b\\visible", "visible"),
        ("unicode ünïcødé ✓ stays", "unicode ünïcødé ✓ stays"),
    ],
)
def test_strip_ansi(raw: str, expected: str) -> None:
    assert strip_ansi(raw) == expected


def test_clean_strips_redacts_and_truncates() -> None:
    r = _redactor()
    secret = "ghp_enCkhvMdgaKjIg8xNbe3nNyjOq9wMxEhh2FD"
    # An escape sequence inside a secret must not shield it from the rules.
    assert r.clean(f"push \x1b[1m{secret[:10]}\x1b[0m{secret[10:]}") == "push [REDACTED:github_token]"
    out = r.clean("x" * 30 + " " + secret, 40)
    assert len(out) == 40 and out.endswith("…")
    assert secret[:6] not in out
    assert r.clean("short", 5) == "short"
    assert r.clean("longer", 5) == "long…"
    assert r.clean("a", 1) == "a"
    assert r.clean("ab", 1) == "…"
    with pytest.raises(ValueError, match="max_len must be >= 1"):
        r.clean("text", 0)


def test_redact_obj_walks_containers() -> None:
    point = namedtuple("point", "label value")
    secret = "sk-u8jzPde0IgxLd6GncfBAepfJBd0Kh8oOOL8dKLzdocJ2isAj"
    obj = {
        "TEACHER_API_KEY_ENV": "OPENAI_API_KEY",
        "db_password": "plainwords",
        "api_key": "x",
        "pad_token": "<pad>",
        "rejected_secret": 3,
        secret: [secret, (1, 2.5, None, True), {"nested": "url https://u:pw123456@h/x"}],
        "set": {secret},
        "point": point("key", secret),
    }
    out = _redactor().redact_obj(obj)
    assert out == {
        "TEACHER_API_KEY_ENV": "OPENAI_API_KEY",
        "db_password": "[REDACTED:password]",
        "api_key": "[REDACTED:credential]",
        "pad_token": "<pad>",
        "rejected_secret": 3,
        "[REDACTED:openai_key]": [
            "[REDACTED:openai_key]",
            (1, 2.5, None, True),
            {"nested": "url https://[REDACTED:url_credentials]@h/x"},
        ],
        "set": {"[REDACTED:openai_key]"},
        "point": point("key", "[REDACTED:openai_key]"),
    }
    assert type(out["point"]) is point  # type: ignore[index]
    assert secret in str(obj)  # the input is left alone


def test_module_functions_use_one_lazy_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(redaction, "_default", None)
    monkeypatch.setenv("AT_UNIT_DEFAULT_SECRET", "default-path-value-77")
    first = redaction.default_redactor()
    assert redaction.default_redactor() is first
    text = "use ghp_enCkhvMdgaKjIg8xNbe3nNyjOq9wMxEhh2FD and default-path-value-77"
    assert redaction.redact(text) == "use [REDACTED:github_token] and [REDACTED:env:AT_UNIT_DEFAULT_SECRET]"
    assert redaction.scan(text) == {"github_token", "env_secret"}
    assert redaction.clean("\x1b[31m" + text, 20) == "use [REDACTED:githu…"
    assert redaction.strip_ansi("\x1b[31mx") == "x"
