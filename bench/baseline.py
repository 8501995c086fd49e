"""Helpers the event-path benches share. First the package as it was at a git ref, importable beside the
working tree's, for a same-run before/after comparison: figures taken minutes apart on a shared machine are
not comparable, figures taken alternately in one run are.

:func:`extract` writes ``git archive <ref>`` of the package folders (and tests/agents, whose scripted agent
a run starts) into a temporary folder, no worktree registered, and builds ``shim/heidi_engine/`` with links
to them, as the Makefile's typecheck target does in ``.typecheck/``. A subprocess with
:meth:`Baseline.env` imports ``heidi_engine`` from the shim: the editable install's finder is appended to
``sys.meta_path``, after the ``PYTHONPATH`` entries, and :meth:`Baseline.check` proves it each time.

Then a supervisor of either in a fresh home with a run kept in its generate stage (:func:`supervise`), a
seeded mixed corpus of events (:func:`mixed_records`: what the supervisor meets besides the one ordinary
event a blast repeats) and the accounting that proves a blast lost nothing (:func:`account`).
Run alone (``python bench/baseline.py [REF]``) it extracts REF and says where the shim's package comes from.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import signal
import string
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from heidi_engine.bus.connection import read_bus_info
from heidi_engine.bus.control import ControlClient
from heidi_engine.bus.event import utc_now_iso
from heidi_engine.bus.event_wire import event_record
from heidi_engine.bus.journal import event_files
from heidi_engine.bus.ledger import LEDGER_FILE

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("bus", "supervisor", "agents", "ui")
EXTRA = ("tests/agents",)
SCRIPTED_AGENT = "tests/agents/scripted_agent.py"
# The run's own agent: one event every 3 s, quiet stretches in which the log, the state and the ledger can
# be seen to agree; the run stays in its generate stage for ever.
AGENT_ARGS = "--events 1000000 --delay 3"
CONFIG = "ROUNDS: 1\nAGENT_HEARTBEAT_TIMEOUT_S: 3600\nEVENT_LOG_RETENTION: 100\n"  # rotation deletes nothing


@dataclass(frozen=True)
class Baseline:
    """An extracted ref: ``tree`` holds its files, ``shim`` goes first on a subprocess's PYTHONPATH."""

    ref: str
    commit: str
    tree: Path
    shim: Path

    def env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """``base`` (default: this process's environment) with the shim first on ``PYTHONPATH``."""
        env = dict(os.environ if base is None else base)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(self.shim), env.get("PYTHONPATH", "")) if p)
        return env

    def check(self) -> Path:
        """The ``heidi_engine.bus`` a subprocess with :meth:`env` imports; raises unless it is this tree's
        (the working tree's would make every "before" figure an "after" one)."""
        code = ("import heidi_engine.bus, heidi_engine.supervisor.cli, heidi_engine.agents.runtime as r; "
                "print(heidi_engine.bus.__file__); print(r.__file__)")
        done = subprocess.run([sys.executable, "-c", code], env=self.env(), capture_output=True, text=True,
                              cwd=self.tree, timeout=60, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"the baseline {self.ref} does not import:\n{done.stderr}")
        files = [Path(line) for line in done.stdout.split()]
        shim_root = self.shim / "heidi_engine"
        for found in files:
            if shim_root not in found.parents:
                raise RuntimeError(f"the baseline subprocess imported {found}, not the shim's {shim_root}")
        return files[0]

    def script(self, relative: str) -> Path:
        """A file of the extracted tree (the scripted agent the baseline's run starts)."""
        return self.tree / relative


def resolve(ref: str) -> str:
    """The commit ``ref`` names in this repository."""
    return subprocess.run(["git", "rev-parse", "--verify", f"{ref}^{{commit}}"], cwd=ROOT, check=True,
                          capture_output=True, text=True).stdout.strip()


def extract(ref: str, folder: Path) -> Baseline:
    """The package folders at ``ref`` under ``folder/tree``, and the shim that imports them."""
    commit = resolve(ref)
    tree, shim = folder / "tree", folder / "shim" / "heidi_engine"
    tree.mkdir(parents=True)
    shim.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", "--format=tar", commit, *PACKAGES, *EXTRA], cwd=ROOT,
                             check=True, capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(tree, filter="data")
    for name in PACKAGES:
        (shim / name).symlink_to(tree / name, target_is_directory=True)
    baseline = Baseline(ref, commit, tree, shim.parent)
    baseline.check()
    return baseline


def supervise(home: Path, baseline: Baseline | None) -> subprocess.Popen[bytes]:
    """A supervisor in ``home`` (of the baseline when given, its scripted agent too), ready for commands."""
    (home / "config.yaml").write_text(CONFIG)
    agent = (baseline.script(SCRIPTED_AGENT) if baseline else ROOT / SCRIPTED_AGENT)
    env = {**os.environ, **{f"AUTOTRAIN_AGENT_{s}": f"{sys.executable} {agent} {AGENT_ARGS}"
                            for s in ("GENERATE", "VALIDATE", "TRAIN", "EVAL")}}
    if baseline:
        env = baseline.env(env)
    sup = subprocess.Popen([sys.executable, "-m", "heidi_engine.supervisor.cli", "--home", str(home), "--no-gpu"],
                           env=env, cwd=baseline.tree if baseline else ROOT,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while not (home / "run" / "bus.json").exists():
        if sup.poll() is not None:
            raise RuntimeError(f"the supervisor exited with {sup.returncode} before it was ready")
        time.sleep(0.05)
    time.sleep(0.3)
    return sup


@contextlib.contextmanager
def shut_down_after(sup: subprocess.Popen[bytes], home: Path) -> Iterator[None]:
    """Around a bench's use of the supervisor ``sup`` of ``home``: when the block ends normally it is asked to
    shut down and given a minute; whatever happened, one still running is then killed (a bench never leaves
    a supervisor behind)."""
    try:
        yield
        with ControlClient(read_bus_info(home), timeout_s=30) as client:
            client.call("shutdown")
        sup.wait(60)
    finally:
        if sup.poll() is None:
            sup.send_signal(signal.SIGKILL)
            sup.wait()


# -- a mixed corpus, and the accounting of a blast ---------------------------------------------------------

_ALNUM = string.ascii_letters + string.digits
_WORDS = ("generated", "sample", "teacher", "reply", "task", "bank/017", "tokens", "retry", "validated",
          "passed", "rejected", "dedup", "schema", "loss", "step", "round", "the", "model", "answer", "def",
          "return", "assert", "import", "json", "prompt", "latency", "ms", "ok", "in", "of", "for", "with")
_UNICODE = ("café résumé naïve", "élève données", "漢字のテスト", "中文字符 数据集", "🚀 done ✅",
            "loss ↓ 0.42 😀🎉", "Ünïcödé — “quoted”", "Ωmega ≤ ∞")
_ANSI = ("\x1b[31mERROR\x1b[0m", "\x1b[1;32mOK\x1b[0m", "\x1b[2K\r", "\x1b[33mwarn\x1b[39m", "\x1b]0;title\x07")


def _token(rng: random.Random, n: int, chars: str = _ALNUM) -> str:
    return "".join(rng.choice(chars) for _ in range(n))


def _secret(rng: random.Random) -> str:
    """A secret one of the redaction rules (bus/secret_rule.py) hides, in the words around it."""
    kind = rng.randrange(7)
    if kind == 0:
        return f"using key sk-proj-{_token(rng, 40)}7"
    if kind == 1:
        return f"cloning with ghp_{_token(rng, 36)}"
    if kind == 2:
        return f"aws AKIA{_token(rng, 16, string.ascii_uppercase + string.digits)} from env"
    if kind == 3:
        return f"header Authorization: Bearer {_token(rng, 31)}9"
    if kind == 4:
        return f"fetching https://bench:{_token(rng, 12)}@example.org/data.jsonl"
    if kind == 5:
        return f"api_key={_token(rng, 24)}1 retried"
    return f'config {{"password": "{_token(rng, 14)}"}}'


def _words(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(n))


def mixed_records(seed: int, count: int, marker: str) -> list[dict[str, object]]:
    """``count`` event records (no ``run_id``: the run's is added) as agents send them before their own
    redaction, each message starting with ``marker``: 15% hold a secret, 8% ANSI escapes, 12% unicode,
    3% are 2–8 KB long (a reply or a traceback, cut to 500 characters after redaction), 20% carry usage
    with a float cost, 5% an artifact path. Every one is checked valid here, so a refusal is a finding."""
    rng = random.Random(seed)
    ts = utc_now_iso()
    records: list[dict[str, object]] = []
    for i in range(count):
        parts = [f"{marker}{i}", _words(rng, rng.randint(3, 14))]
        if rng.random() < 0.08:
            parts.insert(1, rng.choice(_ANSI))
        if rng.random() < 0.15:
            parts.append(_secret(rng))
        if rng.random() < 0.12:
            parts.append(rng.choice(_UNICODE))
        message = " ".join(parts)
        if rng.random() < 0.03:
            size = rng.randint(2048, 8000)
            lines = [message]
            while sum(map(len, lines)) < size:
                lines.append(_secret(rng) if rng.random() < 0.05 else _words(rng, rng.randint(4, 16)))
            message = "\n".join(lines)[:size]
        record: dict[str, object] = {
            "event_version": "1.0", "ts": ts, "round": 1, "stage": "generate",
            "level": "warn" if rng.random() < 0.1 else "info", "event_type": "progress", "message": message,
            "counters_delta": {"teacher_generated": 1} if rng.random() < 0.6 else {},
            "usage_delta": {}, "artifact_paths": [],
        }
        if rng.random() < 0.2:
            record["usage_delta"] = {"requests_sent": 1, "input_tokens": rng.randint(50, 4000),
                                     "output_tokens": rng.randint(10, 1500),
                                     "estimated_cost_usd": round(rng.uniform(0.0001, 0.02), 6)}
        if rng.random() < 0.05:
            record["artifact_paths"] = [f"data/round_1/generate_{i % 8}.jsonl"]
        event_record({**record, "run_id": "run_20240101_000000_0123abcd"})  # raises when invalid
        records.append(record)
    return records


def count_log(run_dir: Path, markers: Sequence[bytes]) -> tuple[int, dict[bytes, int]]:
    """Lines of the event log, all generations, and how many times each marker occurs in them (read in
    chunks: a long blast's log is larger than memory should hold)."""
    lines, counts = 0, dict.fromkeys(markers, 0)
    for path in event_files(run_dir):
        carry = dict.fromkeys(markers, b"")
        with open(path, "rb") as handle:
            while chunk := handle.read(1 << 23):
                lines += chunk.count(b"\n")
                for marker in markers:
                    buf = carry[marker] + chunk  # a marker split by the chunk's start
                    counts[marker] += buf.count(marker)
                    carry[marker] = buf[len(buf) - len(marker) + 1:]
    return lines, counts


def _ledger_count(run_dir: Path) -> int:
    try:
        return int(json.loads((run_dir / LEDGER_FILE).read_bytes())["event_count"])
    except FileNotFoundError:
        return 0


def account(run_dir: Path, client: ControlClient, sent: Mapping[bytes, int], patience_s: float = 30) -> str:
    """"nothing lost: …" once the log's lines, the state's event count and the ledger's agree and the
    log holds every event sent with each marker; "LOST: …" when that has not happened ``patience_s`` after
    the last marked line came. The run's agent keeps emitting, so the three are read again until they
    agree (its events are the lines no marker names)."""
    seen = -1
    moved = time.monotonic()
    while True:
        state = client.call("snapshot")["state"]["event_count"]
        ledger = _ledger_count(run_dir)
        try:
            lines, marked = count_log(run_dir, list(sent))
        except FileNotFoundError:  # a generation renamed while read
            continue
        again = client.call("snapshot")["state"]["event_count"]
        if state == again == lines == ledger and marked == sent:
            total = sum(sent.values())
            return (f"nothing lost: log {lines:,} lines = state {state:,} events = ledger {ledger:,} events; "
                    f"marked lines {total:,} = sent {total:,} (+{lines - total:,} of the run's own)")
        if seen != sum(marked.values()):
            seen, moved = sum(marked.values()), time.monotonic()
        elif time.monotonic() - moved > patience_s:
            detail = ", ".join(f"{marked[m]:,} of {sent[m]:,} sent with {m.decode()!r}" for m in sent)
            return (f"LOST: !!! log {lines:,} lines, state {state:,} events, ledger {ledger:,} events; "
                    f"in the log: {detail} !!!")
        time.sleep(0.3)

if __name__ == "__main__":
    with tempfile.TemporaryDirectory(prefix="atb-base-") as where:
        found = extract(sys.argv[1] if len(sys.argv) > 1 else "HEAD", Path(where))
        print(f"{found.ref} = {found.commit[:12]}: heidi_engine.bus from {found.check()}")
