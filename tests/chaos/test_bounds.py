"""Numbers and work per message stay bounded: out-of-range deltas are refused and counted, an older home's
out-of-range totals load, an adversarial batch costs the loop little, and junk cannot grow its memory."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import zmq
from harness import HttpProc, SupervisorProc, agent_env, scripted, wait_until

from heidi_engine.bus.codec import encode
from heidi_engine.bus.connection import read_bus_info
from heidi_engine.bus.event import MAX_TOTAL, RAW_TEXT_MAX, Event
from heidi_engine.bus.journal import read_events
from heidi_engine.bus.subscriber import Subscriber

Start = Callable[..., SupervisorProc]
QUIET = agent_env(scripted("--events", "1000", "--delay", "0.5"))


def push_events(home: Path, records: list[dict[str, Any]]) -> None:
    """One signed batch on ingress, as an agent holding the bus key would send it."""
    info = read_bus_info(home)
    ctx = zmq.Context()
    push = ctx.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 5000)
    push.connect(info.ingress)
    push.send_multipart(encode(info.key, "event", records, sender="generate", session="bounds"))
    push.close()
    ctx.term()


def menu_status(home: Path) -> dict[str, Any]:
    """``autotrain-menu --status --json``: a viewer's snapshot of the run, as a process."""
    done = subprocess.run([sys.executable, "-m", "heidi_engine.ui.menu_cli", "--home", str(home), "--status", "--json"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return dict(json.loads(done.stdout))


def viewer_counters(home: Path) -> dict[str, int]:
    """The counters a viewer joining now gets from the supervisor's snapshot (msgpack on the wire)."""
    viewer = Subscriber(home)
    try:
        wait_until(lambda: viewer.poll(0.05) >= 0 and viewer.snapshots >= 1, 20, 0.0, "a snapshot")
        return dict(viewer.state.counters)
    finally:
        viewer.close()


def test_out_of_range_deltas_are_refused_and_every_view_keeps_answering(start_supervisor: Start, home: Path) -> None:
    sup = start_supervisor(env=QUIET, config="ROUNDS: 2\n").wait_ready()
    run_id = sup.call("start")["run_id"]
    sup.wait_status("running")
    good = Event(run_id=run_id, stage="generate", event_type="progress", message="GOOD").to_record()
    bad_counters = [2**64 - 1, 2**64 - 1, -1, 2**31 + 1]
    bad_usage = [{"estimated_cost_usd": 1.7e308}, {"estimated_cost_usd": 1.7e308}, {"estimated_cost_usd": float("nan")},
                 {"estimated_cost_usd": float("inf")}, {"estimated_cost_usd": -0.5}, {"input_tokens": 2**40}]
    records = [{**good, "message": "BAD", "counters_delta": {"eval_pass": n}} for n in bad_counters]
    records += [{**good, "message": "BAD", "usage_delta": usage} for usage in bad_usage]
    records += [{**good, "message": "BAD", "round": 4}]  # this run has 2 rounds: 3 is the last accepted
    records += [{**good, "counters_delta": {"eval_pass": 5}, "usage_delta": {"estimated_cost_usd": 0.5}}]
    push_events(home, records)

    def refused() -> dict[str, Any] | None:
        s = sup.status()
        schema = s["bad_messages"].get("ingress:bad_schema", 0)
        return s if schema == len(bad_counters) + len(bad_usage) and s["refused_events"].get("bad_round") == 1 else None

    stats = wait_until(refused, 30, 0.1, "every out-of-range delta refused", sup.evidence)
    assert stats["counters"]["eval_pass"] == 5 and stats["usage"]["estimated_cost_usd"] == 0.5
    http = HttpProc(home)
    try:
        wait_until(lambda: http.health() == "ok", 20, 0.1, "the HTTP server following", sup.evidence)
        body = http.get("/status").json()
    finally:
        http.close()
    assert body["counters"]["eval_pass"] == 5  # type: ignore[index]
    assert menu_status(home)["counters"]["eval_pass"] == 5
    assert viewer_counters(home)["eval_pass"] == 5
    sup.call("stop")
    sup.wait_status("stopped")
    run_dir = home / "runs" / run_id
    assert [e.message for e in read_events(run_dir) if e.message in ("GOOD", "BAD")] == ["GOOD"]
    for name in ("state.json", "ledger.json"):
        text = (run_dir / name).read_text()
        assert "Infinity" not in text and "NaN" not in text and str(2**64 - 1) not in text, name


def test_a_home_with_out_of_range_totals_loads_clamped_and_refuses_what_would_pass_them(
    start_supervisor: Start, home: Path
) -> None:
    sup = start_supervisor(env=QUIET, config="ROUNDS: 2\n").wait_ready()
    run_id = sup.call("start")["run_id"]
    sup.wait_status("running")
    sup.call("stop")
    sup.wait_status("stopped")
    sup.stop()
    run_dir = home / "runs" / run_id
    # What an older version could write: a total past what msgpack carries, a cost that overflowed.
    for name in ("state.json", "ledger.json"):
        text = (run_dir / name).read_text()
        text = text.replace('"eval_pass":0', f'"eval_pass":{2 * (2**64 - 1)}').replace('"eval_pass": 0', f'"eval_pass": {2 * (2**64 - 1)}')
        text = text.replace('"estimated_cost_usd":0.0', '"estimated_cost_usd":Infinity').replace(
            '"estimated_cost_usd": 0.0', '"estimated_cost_usd": Infinity')
        assert str(2 * (2**64 - 1)) in text and "Infinity" in text, f"{name} has no total to spoil"
        (run_dir / name).write_text(text)

    sup = start_supervisor(env=QUIET, config="ROUNDS: 2\n").wait_ready()
    listed = subprocess.run([sys.executable, "-m", "heidi_engine.ui.menu_cli", "--home", str(home), "--list"],
                            capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0 and run_id in listed.stdout, listed.stdout + listed.stderr
    sup.call("resume_run", {"run_id": run_id})
    resumed = sup.wait_status("running")
    assert resumed["counters"]["eval_pass"] == MAX_TOTAL and resumed["usage"]["estimated_cost_usd"] is None
    assert "out of range" in sup.output()
    good = Event(run_id=run_id, stage="generate", event_type="progress", message="OVER").to_record()
    push_events(home, [{**good, "counters_delta": {"eval_pass": 1}}])
    wait_until(lambda: sup.status()["refused_events"].get("bad_value") == 1, 30, 0.1, "the overflowing event refused",
               sup.evidence)
    assert menu_status(home)["counters"]["eval_pass"] == MAX_TOTAL
    assert viewer_counters(home)["eval_pass"] == MAX_TOTAL


def test_an_adversarial_batch_costs_the_loop_under_a_second(start_supervisor: Start, home: Path) -> None:
    """A signed 4 MiB batch of text built to make redaction backtrack: under 1 s of the supervisor's CPU,
    and ``/health`` never calls it silent meanwhile."""
    sup = start_supervisor(env=QUIET, config="ROUNDS: 1\n").wait_ready()
    run_id = sup.call("start")["run_id"]
    sup.wait_status("running")
    triggers = ["password=", "sk-", "Bearer ", "token: ", "-----BEGIN ", "a=", "'", "api_key=\"", "AKIA", "ghp_"]
    records = []
    for i in range(250):
        text = (triggers[i % len(triggers)] * RAW_TEXT_MAX)[:RAW_TEXT_MAX]
        records.append(Event(run_id=run_id, stage="generate", level="error", event_type="progress",
                             message="ADVERSARIAL").to_record() | {"message": text, "error": text})
    http = HttpProc(home)
    healths: list[str] = []
    watching = threading.Event()

    def watch() -> None:
        while not watching.wait(0.2):
            reply = http.get("/health").json()
            healths.append(f"{reply['health']} {reply.get('reason', '')}")

    wait_until(lambda: http.health() == "ok", 20, 0.1, "the HTTP server following", sup.evidence)
    supervisor = psutil.Process(sup.proc.pid)
    before = sum(supervisor.cpu_times()[:2])
    count = sup.status()["accepted_events"]
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        push_events(home, records)
        wait_until(lambda: sup.status()["accepted_events"] >= count + 250, 60, 0.05, "the batch accepted", sup.evidence)
        cpu_s = sum(supervisor.cpu_times()[:2]) - before
        time.sleep(1)
    finally:
        watching.set()
        watcher.join()
        http.close()
    print(f"the adversarial batch took {cpu_s:.2f} s of the supervisor's CPU")  # the closing note's figure
    assert healths and not [h for h in healths if "silent" in h], healths
    assert cpu_s < 1.0, f"the supervisor spent {cpu_s:.2f} s of CPU on one 4 MiB batch"


def test_junk_on_three_connections_cannot_grow_the_supervisor(start_supervisor: Start, home: Path) -> None:
    """3 connections × 250 junk 4 MiB messages: ingress is bounded in bytes, senders wait in their own
    queues, every message is still refused and counted, and the supervisor's RSS stays under 400 MiB."""
    sup = start_supervisor(env=QUIET, config="ROUNDS: 1\n").wait_ready()
    info = read_bus_info(home)
    supervisor = psutil.Process(sup.proc.pid)
    rss: list[float] = [supervisor.memory_info().rss / 2**20]
    junk = [b"event", b"\x81" * 64, b"j" * (4 * 2**20 - 256), b"s" * 32]
    per_connection = 250
    errors: list[BaseException] = []

    def flood() -> None:
        ctx = zmq.Context()
        push = ctx.socket(zmq.PUSH)
        push.setsockopt(zmq.LINGER, 60_000)
        push.setsockopt(zmq.SNDHWM, 1000)
        push.connect(info.ingress)
        try:
            for _ in range(per_connection):
                push.send_multipart(junk, copy=False)
        except zmq.ZMQError as exc:
            errors.append(exc)
        finally:
            push.close()
            ctx.term()

    senders = [threading.Thread(target=flood) for _ in range(3)]
    for sender in senders:
        sender.start()

    def all_refused() -> bool:
        rss.append(supervisor.memory_info().rss / 2**20)
        return sum(sup.status()["bad_messages"].values()) >= 3 * per_connection

    wait_until(all_refused, 240, 0.2, "every junk message refused", sup.evidence)
    for sender in senders:
        sender.join(60)
    assert not errors, errors
    assert sup.call("ping")["pong"]
    print(f"supervisor RSS {rss[0]:.0f} MiB before, {max(rss):.0f} MiB at the peak")  # the closing note's figure
    assert max(rss) < 400, f"supervisor RSS peaked at {max(rss):.0f} MiB (from {rss[0]:.0f})"
