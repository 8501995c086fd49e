"""Throughput of redaction on event-sized messages: clean ones (the common case) and ones holding a secret.

Run: ``python bench/bench_redaction.py [--seconds S]``. Prints redactions per second and microseconds per
call for each case; it asserts nothing, so that figures from different machines can be compared.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from heidi_engine.bus.redaction import Redactor, strip_ansi

# Typical ~80-character event messages. The second set holds trigger words ("tokens", "://", "key") that
# send a clean message through the rules it triggers.
CLEAN = (
    "round 3 generate: 42/128 samples done, teacher latency 1.8s, queue depth 4, ok...",
    "validate: 120 ok, 3 rejected_schema, 1 rejected_dedup; unit tests 97/100 passed!!",
    "eval: pass@1 0.412 on 164 problems, best so far round 2, checkpoint saved to disk.",
)
CLEAN_WITH_TRIGGERS = (
    "train step 350/1000 loss=0.8123 lr=1.8e-4 grad_norm=0.93 tokens/s=5120 eta 4m12s.",
    "teacher http://127.0.0.1:8000/v1 answered 200 in 1.2s, 812 output tokens, key ok",
)
SECRET = (
    "teacher said: use sk-proj-Q3xv9LmT2aZkR8pWc1NbYh4dJf7GsE0u and retry the request",
    "config dump: password=Xk9#mQ2vL7pw host=db.internal port=5432 user=trainer ok ok",
    "push failed for https://bob:Zr8Kp2Lm9Qx@git.example.com/org/repo.git (exit 128).",
    "curl -H 'Authorization: Bearer 8f3kD93jfLq0ZpX7wM2cV5bN1' https://api.example.com",
    "HF upload with 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 failed: 403 forbidden, retry",
)
ENV = {"OPENAI_API_KEY": "sk-envKey0123456789abcdefXYZ", "HF_TOKEN": "hf_EnvTokenAbCdEfGhIjKlMnOpQrStUv"}


def _rate(fn: Callable[[str], object], messages: tuple[str, ...], seconds: float) -> float:
    calls = 0
    deadline = time.perf_counter() + seconds
    started = time.perf_counter()
    while time.perf_counter() < deadline:
        for message in messages:
            fn(message)
        calls += len(messages)
    return calls / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="time spent on each case (default 1.0)")
    args = parser.parse_args()
    redactor = Redactor(env=ENV)
    cases: tuple[tuple[str, Callable[[str], object], tuple[str, ...]], ...] = (
        ("redact, clean 80-char messages", redactor.redact, CLEAN),
        ("redact, clean with trigger words", redactor.redact, CLEAN_WITH_TRIGGERS),
        ("redact, messages with a secret", redactor.redact, SECRET),
        ("clean(max_len=500), clean messages", lambda text: redactor.clean(text, 500), CLEAN),
        ("clean(max_len=500), messages with a secret", lambda text: redactor.clean(text, 500), SECRET),
        ("strip_ansi alone, clean messages", strip_ansi, CLEAN),
    )
    for name, fn, messages in cases:
        rate = _rate(fn, messages, args.seconds)
        print(f"{name:<45} {rate:>12,.0f} /s  {1e6 / rate:8.2f} us/call")


if __name__ == "__main__":
    main()
