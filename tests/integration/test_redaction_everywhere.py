"""Secrets an agent sends reach nothing a person or a program can read: not a file of the home, not the HTTP
server's replies, not the supervisor's log, not a viewer. The event carries a key and the daemon's own secret
in its artifact paths, and secrets broken up by zero-width spaces and soft hyphens in its text."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from harness import HttpProc, SupervisorProc, agent_env, scripted, wait_until

from heidi_engine.bus.connection import read_bus_info
from heidi_engine.bus.event import Event
from heidi_engine.bus.publisher import Publisher

KEY = "sk-proj-Q3xv9LmT2aZkR8pWc1NbYh4dJf7GsE0u"
GITHUB = "ghp_enCkhvMdgaKjIg8xNbe3nNyjOq9wMxEhh2FD"
# The daemon's OPENAI_API_KEY: no rule knows its shape, only the supervisor's environment does.
OWN = "Daemon.Own-Secret.7Qx2vL9"
# Two events a minute: the planted one stays among the recent events while the viewers look.
QUIET = agent_env(scripted("--events", "100", "--delay", "30"))


def _pieces(secret: str, cut: int) -> list[str]:
    """What must appear nowhere: the secret, and its parts on either side of where it was broken up."""
    return [secret, secret[:cut], secret[cut:]]


FORBIDDEN = [*_pieces(KEY, 11), *_pieces(GITHUB, 14), *_pieces(OWN, 9)]


def _leaks(text: str) -> list[str]:
    return [piece for piece in FORBIDDEN if piece in text]


def _run(*command: str) -> str:
    wide = {**os.environ, "COLUMNS": "200"}  # a frame wide enough for the whole message
    done = subprocess.run([sys.executable, "-m", *command], capture_output=True, text=True, timeout=60, check=False,
                          env=wide)  # fmt: skip
    assert done.returncode in (0, 3), done  # 3: a viewer found no supervisor; it still printed what it had
    return done.stdout + done.stderr


def test_an_agent_s_secrets_reach_no_file_reply_log_or_viewer(
    home: Path, start_supervisor: Callable[..., SupervisorProc]
) -> None:
    sup = start_supervisor(env={**QUIET, "OPENAI_API_KEY": OWN}, config="ROUNDS: 1\n").wait_ready()
    run_id = sup.call("start")["run_id"]
    sup.wait_status("running")
    base = Event(run_id=run_id, stage="generate", level="error", event_type="progress").model_dump()
    # model_construct skips the model's own redaction: the raw secrets really cross the bus.
    planted = Event.model_construct(
        **{
            **base,
            "message": f"PLANTED: retry with {KEY[:11]}\u200b{KEY[11:]} and {OWN[:9]}\u00ad{OWN[9:]}",
            "error": f"push refused for {GITHUB[:14]}\u00ad\u200b{GITHUB[14:]}",
            "artifact_paths": [
                f"data/{KEY}/samples.jsonl",
                OWN,
                f"out/{OWN}.bin",
                "data/round_1/clean.jsonl",
            ],
            "counters_delta": {"teacher_failed": 1},
        }
    )
    with Publisher(read_bus_info(home), "generate:planted") as publisher:
        publisher.send("event", planted)
    wait_until(lambda: sup.status()["counters"]["teacher_failed"] == 1, 20, 0.05, "the planted event counted",
               sup.evidence)  # fmt: skip

    # What the supervisor wrote: the event, its secrets replaced, its paths still relative ones.
    events = [json.loads(line) for line in (home / "runs" / run_id / "events.jsonl").read_text().splitlines()]
    (written,) = [e for e in events if "PLANTED" in e["message"]]
    assert written["message"] == "PLANTED: retry with [REDACTED:openai_key] and [REDACTED:env:OPENAI_API_KEY]"
    assert written["error"] == "push refused for [REDACTED:github_token]"
    assert written["artifact_paths"] == [
        "data/REDACTED-openai_key/samples.jsonl",
        "REDACTED-env-OPENAI_API_KEY",
        "out/REDACTED-env-OPENAI_API_KEY.bin",
        "data/round_1/clean.jsonl",
    ]
    state = home / "runs" / run_id / "state.json"  # written at least once a second while something changed
    wait_until(lambda: json.loads(state.read_text()).get("error") == "push refused for [REDACTED:github_token]",
               10, 0.05, "the error in state.json", sup.evidence)  # fmt: skip

    # The HTTP server's replies.
    http = HttpProc(home)
    try:
        wait_until(lambda: http.health() == "ok", 20, 0.1, "the HTTP server following", sup.evidence)
        for path in ("/", "/status", "/health", "/metrics"):
            reply = http.get(path)
            assert reply.status == 200 and not _leaks(reply.body.decode()), path
    finally:
        http.close()

    # The viewers: the menu's status and logs, the dashboard's overview and events.
    shown = {
        "menu --status --json": _run("heidi_engine.ui.menu_cli", "--home", str(home), "--status", "--json"),
        "menu --logs": _run("heidi_engine.ui.menu_cli", "--home", str(home), "--logs"),
        **{
            f"dash --view {view}": _run(
                "heidi_engine.ui.dash_cli", "--home", str(home), "--once", "--view", str(view)
            )
            for view in (1, 4)
        },
    }
    assert written["message"] in shown["dash --view 4"], shown["dash --view 4"]
    for viewer, text in shown.items():
        assert not _leaks(text), (viewer, _leaks(text), text)

    # Every file of the home, the supervisor's log among them, as bytes.
    sup.stop()
    files = [path for path in home.rglob("*") if path.is_file()]
    assert home / "supervisor.out" in files and len(files) > 5
    for path in files:
        raw = path.read_bytes()
        leaked = [piece for piece in FORBIDDEN if piece.encode() in raw]
        assert not leaked, (path.relative_to(home), leaked)
