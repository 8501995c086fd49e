"""Throughput of redaction on event-sized messages: clean ones (the common case) and ones holding a secret;
then its cost on adversarial text (a rule's trigger repeated) at 1, 2, 4 and 8 KiB, as time per KiB next to
the same at 1 KiB (a ratio near 1 is linear; quadratic doubles it at each size), and the CPU time of a 4 MiB
batch like the supervisor can receive at once (512 texts of 8 KiB, each a different repeat). Last, the trigger
pre-filter: CPU time per call of redaction that looks for every trigger (old) and of the filtered one (new),
measured in the same run, on short and 8 KiB texts and on the repeated-trigger worst case.

Run: ``python bench/bench_redaction.py [--seconds S] [--repeats N]``. Prints figures; it asserts nothing, so
that figures from different machines can be compared. Times on adversarial text are CPU times.
"""

from __future__ import annotations

import argparse
import itertools
import time
from collections.abc import Callable

from heidi_engine.bus.redaction import Redactor, _Unfiltered, strip_ansi

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
# Repeats that made rules rescan what they had read (the first five were quadratic before the rules were
# made linear), then one per kind of rule and the invisible characters.
REPEATS = (
    "password=", "token=", "token:", "token:" * 96 + " ", "token:" * 85 + "(", "api_key=", "secret=",
    "sk-", "Bearer ", "Authorization: Bearer ", "-----BEGIN", "-----BEGIN PRIVATE KEY-----", "a=", "'", '"',
    "QUJDREVGR0g", "a://:b@", "eyJaaaa.eaa.", "AKIA", "ghp_", "hf_Aa", 'password="abc"', "token='abc' ",
    "pass\u00adword=abc123 ", "token=\u200b", "sk-pr\u200boj-",
)  # fmt: skip
SIZES_KIB = (1, 2, 4, 8)
CLEAN_49 = "round 3 generate: 42/128 samples done, queue ok.."
SECRET_49 = "use sk-proj-Q3xv9LmT2aZkR8pWc1NbYh4dJf7GsE0u now."
# Repeated triggers at 8 KiB: the assignment rules' skips, a rule that reads to the end, the commonest one.
WORST = ("token=", "token:" * 96 + " ", "password=", "-----BEGIN", "sk-")
TEXT_MAX = 8192  # the longest message or error an event accepts before redaction (RAW_TEXT_MAX)


def _rate(fn: Callable[[str], object], messages: tuple[str, ...], seconds: float) -> float:
    calls = 0
    deadline = time.perf_counter() + seconds
    started = time.perf_counter()
    while time.perf_counter() < deadline:
        for message in messages:
            fn(message)
        calls += len(messages)
    return calls / (time.perf_counter() - started)


def _repeat(unit: str, size: int) -> str:
    return (unit * (size // len(unit) + 1))[:size]


def _cpu_ms(fn: Callable[[str], object], text: str, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.process_time()
        fn(text)
        best = min(best, time.process_time() - started)
    return best * 1000


def scaling(redactor: Redactor, repeats: int) -> None:
    """Print each repeat's CPU ms at each size, and its time per KiB at 8 KiB over that at 1 KiB."""
    sizes = "".join(f"{kib:>6} KiB" for kib in SIZES_KIB)
    print(f"\nadversarial repeats, CPU ms per text {sizes}   per KiB at 8 vs 1 KiB")
    for unit in REPEATS:
        ms = [_cpu_ms(redactor.redact, _repeat(unit, kib * 1024), repeats) for kib in SIZES_KIB]
        ratio = (ms[-1] / SIZES_KIB[-1]) / max(ms[0] / SIZES_KIB[0], 1e-6)
        print(f"  {ascii(unit)[:36]:<36}" + "".join(f"{m:10.2f}" for m in ms) + f"   x{ratio:.2f}")


def _batch_texts() -> list[str]:
    units = (
        f"{unit}{suffix}"
        for suffix, unit in itertools.product(("", "1", " ", "=", "\n", "(", "x", "$"), REPEATS)
    )
    return [_repeat(unit, TEXT_MAX) for unit in itertools.islice(itertools.cycle(units), 512)]


def batch(redactor: Redactor) -> None:
    """Print the CPU time of 512 texts of 8 KiB, each a different repeat, cut as an event's message is."""
    texts = _batch_texts()
    started = time.process_time()
    for text in texts:
        redactor.clean(text, 500)
    cpu = time.process_time() - started
    mib = sum(map(len, texts)) / 2**20
    print(f"\n{len(texts)} adversarial texts, {mib:.1f} MiB: {cpu:.3f} s of CPU ({cpu / mib:.3f} s per MiB)")


def _cpu_us(fn: Callable[[str], object], text: str, seconds: float) -> float:
    """CPU microseconds per call, over chunks of calls that double until ``seconds`` of CPU are spent."""
    calls, chunk = 0, 1
    started = time.process_time()
    while (spent := time.process_time() - started) < seconds:
        for _ in range(chunk):
            fn(text)
        calls += chunk
        chunk *= 2
    return spent / calls * 1e6


def _row(name: str, old: float, new: float) -> None:
    print(f"  {name:<52}{old:11.2f}{new:11.2f}   x{new / old:.2f}")


def prefilter(redactor: Redactor, old: Redactor, seconds: float) -> None:
    """Print the CPU time per call of redaction that looks for every trigger (old) and of the pre-filter
    (new); the least of three alternating runs counts for each, so that both see the same machine."""
    clean_8k = _repeat("\n".join(CLEAN), TEXT_MAX)
    cases = (
        (f"redact, clean {len(CLEAN_49)}-char message", CLEAN_49),
        (f"redact, {len(SECRET_49)}-char message with a secret", SECRET_49),
        (f"redact, clean {len(clean_8k)}-char log text", clean_8k),
        *((f"redact, 8 KiB of {unit[:12]!a}", _repeat(unit, TEXT_MAX)) for unit in WORST),
    )
    print(f"\npre-filter, CPU us per call{'old':>35}{'new':>11}   new/old")
    for name, text in cases:
        runs = [_cpu_us(r.redact, text, seconds / 6) for _ in range(3) for r in (old, redactor)]
        _row(name, min(runs[::2]), min(runs[1::2]))
    texts, spent = _batch_texts(), []
    for r in (old, redactor) * 3:
        started = time.process_time()
        for text in texts:
            r.clean(text, 500)
        spent.append((time.process_time() - started) / len(texts) * 1e6)
    _row("clean(max_len=500), 4 MiB repeated-trigger batch", min(spent[::2]), min(spent[1::2]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="time spent on each case (default 1.0)")
    parser.add_argument("--repeats", type=int, default=5, help="tries per adversarial text, the least counts")
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
    scaling(redactor, args.repeats)
    batch(redactor)
    prefilter(redactor, _Unfiltered(env=ENV), args.seconds)


if __name__ == "__main__":
    main()
