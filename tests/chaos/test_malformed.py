"""Malformed input on ingress and control: the daemon stays up, counts every refusal, persists none."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import zmq
from harness import SupervisorProc, agent_env, scripted, wait_until

from heidi_engine.bus.codec import decode, encode, sign
from heidi_engine.bus.connection import read_bus_info
from heidi_engine.bus.event import Event
from heidi_engine.bus.journal import read_events
from heidi_engine.bus.message import Command
from heidi_engine.bus.server import INGRESS_BATCH_MAX_BYTES

Start = Callable[..., SupervisorProc]


def test_garbage_never_takes_the_daemon_down(start_supervisor: Start, home: Path) -> None:
    sup = start_supervisor(env=agent_env(scripted("--events", "200", "--delay", "0.05")), config="ROUNDS: 1\n").wait_ready()
    run_id = sup.call("start")["run_id"]
    info = read_bus_info(home)
    key = info.key
    good = encode(key, "event", Event(run_id=run_id, stage="generate", event_type="progress", message="INTRUDER"),
                  sender="x", session="s")
    topic, header, body, _signature = good
    bad_schema_body = msgpack.packb([{"run_id": run_id, "stage": "nope", "event_type": "progress", "message": "INTRUDER"}])
    wrong_run = encode(key, "event", Event(run_id="run_20000101_000000_deadbeef", stage="generate",
                                           event_type="progress", message="INTRUDER"), sender="x", session="s")
    truncated = body[: len(body) // 2]
    payloads: list[list[bytes]] = [
        [b"garbage"],
        [b"\x00" * 10, b"\xff" * 10],
        [topic, header, body],  # wrong frame count
        [topic, header, body, b"0" * 32],  # bad signature
        [topic, header, truncated, sign(key, topic, header, truncated)],  # truncated msgpack, validly signed
        [topic, header, bad_schema_body, sign(key, topic, header, bad_schema_body)],
        [topic, header, b"x" * (INGRESS_BATCH_MAX_BYTES + 10), b"s" * 32],  # oversize
        wrong_run,
    ]
    ctx = zmq.Context()
    push = ctx.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 2000)
    push.connect(info.ingress)
    for frames in payloads * 5:
        push.send_multipart(frames)
    dealer = ctx.socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.connect(info.control)
    forged_stop = encode(b"k" * 32, "command", Command(id="1", name="shutdown"), sender="evil", session="s")
    unsigned_stop = [b"command", forged_stop[1], forged_stop[2], b""]
    for frames in ([b"junk"], forged_stop, unsigned_stop, [b"command", b"\x81", b"\x81", b"x" * 32]):
        dealer.send_multipart(frames)

    def refused() -> dict[str, int]:
        stats = sup.status()
        counts: dict[str, int] = stats["bad_messages"]
        return counts if sum(counts.values()) >= 7 * 5 + 4 and stats["refused_events"].get("wrong_run") == 5 else {}

    counts = wait_until(refused, 20, 0.1, "all refusals counted")
    assert counts["ingress:bad_signature"] >= 5 and counts["ingress:bad_frames"] >= 15
    assert counts["ingress:bad_msgpack"] == 5 and counts["ingress:bad_schema"] == 5
    assert counts["ingress:oversize"] == 5
    assert counts["control:bad_signature"] >= 1
    push.close()
    dealer.close()
    ctx.term()
    assert sup.call("ping")["pong"]
    sup.call("stop")
    sup.wait_status("stopped")
    assert not any("INTRUDER" in e.message for e in read_events(home / "runs" / run_id))
    assert sup.proc.poll() is None  # the forged shutdown changed nothing


def test_only_the_supervisor_speaks_for_the_pipeline(start_supervisor: Start, home: Path) -> None:
    """A key holder forging pipeline or stage boundaries from an agent connection changes nothing."""
    sup = start_supervisor(env=agent_env(scripted("--events", "400", "--delay", "0.02")), config="ROUNDS: 1\n").wait_ready()
    run_id = sup.call("start")["run_id"]
    sup.wait_status("running")
    info = read_bus_info(home)
    forged = [
        Event(run_id=run_id, stage="round_end", level="success", event_type="pipeline_complete", message="FORGED"),
        Event(run_id=run_id, stage="generate", level="success", event_type="stage_end", message="FORGED"),
        Event(run_id=run_id, stage="validate", event_type="stage_start", message="FORGED"),
        Event(run_id=run_id, stage="round_end", level="error", event_type="pipeline_stop", message="FORGED", error="x"),
        Event(run_id=run_id, stage="generate", event_type="progress", message="FORGED",
              usage_delta={"estimated_cost_usd": 0.5}),  # a real progress event: accepted
    ]
    ctx = zmq.Context()
    push = ctx.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 2000)
    push.connect(info.ingress)
    # One batch: each refused event is refused alone, the progress event in it goes on.
    push.send_multipart(encode(info.key, "event", forged, sender="generate", session="s"))
    progress = forged[-1].to_record()
    nan_cost = {**progress, "usage_delta": {"estimated_cost_usd": float("nan")}}
    huge_text = {**progress, "message": "password=" + "x" * 20_000}  # refused before redaction runs
    between = {**progress, "message": "BETWEEN", "usage_delta": {"estimated_cost_usd": 0.25}}
    push.send_multipart(encode(info.key, "event", [nan_cost, between, huge_text], sender="generate", session="s"))
    push.close()
    ctx.term()
    def refused() -> dict[str, Any] | None:
        s = sup.status()
        done = s["refused_events"].get("supervisor_only") == 4 and s["bad_messages"].get("ingress:bad_schema") == 2
        return s if done else None

    stats = wait_until(refused, 20, 0.1, "forged boundaries and bad values refused", sup.evidence)
    assert stats["status"] == "running" and stats["current_stage"] == "generate"
    assert stats["usage"]["estimated_cost_usd"] == 0.75  # the two ordinary progress events counted, nothing else
    sup.call("stop")
    sup.wait_status("stopped")
    forged_on_disk = [e for e in read_events(home / "runs" / run_id) if e.message == "FORGED"]
    assert [e.event_type for e in forged_on_disk] == ["progress"]
    assert sum(1 for e in read_events(home / "runs" / run_id) if e.message == "BETWEEN") == 1
    assert "NaN" not in (home / "runs" / run_id / "state.json").read_text()


def test_a_command_sent_again_or_from_long_ago_is_refused_and_counted(start_supervisor: Start, home: Path) -> None:
    """Signed frames captured once (or a command stamped ts=0) do not work a second time."""
    sup = start_supervisor(config="ROUNDS: 1\n").wait_ready()
    info = read_bus_info(home)
    ctx = zmq.Context()
    dealer = ctx.socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.connect(info.control)

    def answer(frames: list[bytes]) -> Any:
        dealer.send_multipart(frames)
        assert dealer.poll(10_000), "no reply"
        return decode(dealer.recv_multipart(), info.key).body

    try:
        status = encode(info.key, "command", Command(id="once", name="status"), sender="tap", session="s")
        assert answer(status).ok
        replayed = answer(status)
        assert not replayed.ok and "replayed" in replayed.error, replayed
        old = encode(info.key, "command", Command(id="old", name="status"), sender="tap", session="s", ts=0.0)
        stale = answer(old)
        assert not stale.ok and "stale" in stale.error, stale
    finally:
        dealer.close()
        ctx.term()
    counts = sup.status()["bad_messages"]
    assert counts.get("control:replayed") == 1 and counts.get("control:stale") == 1, counts
