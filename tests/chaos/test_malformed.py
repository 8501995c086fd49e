"""Malformed input on ingress and control: the daemon stays up, counts every refusal, persists none."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import msgpack
import zmq
from harness import SupervisorProc, agent_env, scripted, wait_until

from heidi_engine.bus.codec import MAX_MESSAGE_BYTES, encode, sign
from heidi_engine.bus.connection import read_bus_info
from heidi_engine.bus.event import Event
from heidi_engine.bus.journal import read_events
from heidi_engine.bus.message import Command

Start = Callable[..., SupervisorProc]


def test_garbage_never_takes_the_daemon_down(start_supervisor: Start, home: Path) -> None:
    sup = start_supervisor(env=agent_env(scripted("--events", "200", "--delay", "0.05")), config="ROUNDS: 1\n").wait_ready()
    run_id = sup.call("start")["run_id"]
    info = read_bus_info(home)
    key = info.key
    good = encode(key, "event", Event(run_id=run_id, stage="generate", event_type="progress", message="INTRUDER"),
                  sender="x", session="s")
    topic, header, body, _signature = good
    bad_schema_body = msgpack.packb({"run_id": run_id, "stage": "nope", "event_type": "progress", "message": "INTRUDER"})
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
        [topic, header, b"x" * (MAX_MESSAGE_BYTES + 10), b"s" * 32],  # oversize
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
