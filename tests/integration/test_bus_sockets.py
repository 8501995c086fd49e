"""The bus over real sockets between two processes: signed messages arrive, forged ones are counted and
dropped, and a control request against a silent peer times out without wedging the client."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import zmq
from harness import wait_until

from heidi_engine.bus.codec import encode
from heidi_engine.bus.connection import new_bus_info, read_bus_info, write_bus_info
from heidi_engine.bus.control import ControlClient
from heidi_engine.bus.errors import ControlTimeout
from heidi_engine.bus.event import Event
from heidi_engine.bus.message import Reply
from heidi_engine.bus.server import BusServer

RUN = "run_20240215_123456_abc12345"

PUBLISHER = textwrap.dedent("""
    import sys
    from heidi_engine.bus.connection import read_bus_info, BusInfo
    from heidi_engine.bus.publisher import Publisher
    from heidi_engine.bus.event import Event
    from heidi_engine.bus.context import new_socket
    import zmq
    info = read_bus_info(sys.argv[1])
    with Publisher(info, "agent") as pub:
        for i in range(50):
            pub.send("event", Event(run_id=sys.argv[2], stage="generate", event_type="progress", message=f"n{i}"))
    forged = BusInfo(**{**info.__dict__, "key_hex": "00" * 32})
    # Its delivery queries are refused too (wrong key): it waits out its short linger, then gives up.
    with Publisher(forged, "intruder", linger_s=1.0) as bad:
        bad.send("event", Event(run_id=sys.argv[2], stage="generate", event_type="progress", message="forged"))
    raw = new_socket(zmq.PUSH, linger_ms=2000)
    raw.connect(info.ingress)
    raw.send_multipart([b"event", b"junk", b"junk"])   # unsigned, wrong frame count
    raw.send(b"garbage")
    import msgpack
    from heidi_engine.bus.codec import sign
    old_head = msgpack.packb({"v": 1, "kind": "event", "sender": "old", "session": "s", "ts": 0.0, "sup": None, "seq": None})
    old_body = msgpack.packb({"run_id": sys.argv[2], "stage": "generate", "event_type": "progress", "message": "v1"})
    raw.send_multipart([b"event", old_head, old_body, sign(info.key, b"event", old_head, old_body)])  # a v1 agent
    raw.close()
""")


@pytest.fixture
def bus(home: Path):  # type: ignore[no-untyped-def]
    info = new_bus_info(home, 1)
    write_bus_info(home, info)
    server = BusServer(info)
    yield server
    server.close()


def test_signed_messages_arrive_and_forged_are_counted(bus: BusServer, home: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", PUBLISHER, str(home), RUN], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    received: list[Event] = []

    def drain() -> bool:
        bus.wait(0.05)
        bus.recv_command()  # a supervisor answers its publishers' delivery queries
        for header, body in bus.recv_ingress():
            assert header.kind == "event"
            received.extend(bus.decode_ingress_events(body))
        return proc.poll() is not None and len(received) >= 50 and bus.bad.total >= 4

    try:
        wait_until(drain, 60, 0.0, "the publisher's exit, 50 events and 4 refusals",
                   evidence=lambda: f"exit status {proc.poll()}, {len(received)} events, refused {dict(bus.bad.counts)}")
    finally:
        if proc.poll() is None:
            proc.kill()
        _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert [e.message for e in received] == [f"n{i}" for i in range(50)]
    assert bus.bad.counts["ingress:bad_signature"] == 1
    assert bus.bad.counts["ingress:bad_frames"] == 2
    assert bus.bad.counts["ingress:bad_version"] == 1  # an agent of the previous wire: refused, not a crash
    assert all(e.message != "forged" for e in received)


SILENT_THEN_ANSWERING = textwrap.dedent("""
    import sys, time
    from heidi_engine.bus.connection import new_bus_info, write_bus_info
    from heidi_engine.bus.server import BusServer
    from heidi_engine.bus.message import Reply
    home = sys.argv[1]
    info = new_bus_info(home, 1)
    server = BusServer(info)
    write_bus_info(home, info)
    # Silent until told to answer (a file appears), then answers every command.
    import pathlib
    go = pathlib.Path(home) / "answer"
    deadline = time.monotonic() + 60
    while not go.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    answered = 0
    while answered < 2 and time.monotonic() < deadline:
        server.wait(0.1)
        got = server.recv_command()
        if got:
            caller, command = got
            server.reply(caller, Reply(id=command.id, ok=True, result=command.name))
            answered += 1
    server.close()
""")


def test_control_times_out_against_silent_peer_then_recovers(home: Path) -> None:
    peer = subprocess.Popen([sys.executable, "-c", SILENT_THEN_ANSWERING, str(home)])
    try:
        wait_until(lambda: (home / "run" / "bus.json").exists(), 20, 0.05, "peer bound")
        client = ControlClient(read_bus_info(home), timeout_s=0.5)
        with pytest.raises(ControlTimeout, match=r"no reply within 0\.5 s"):
            client.request("ping")
        (home / "answer").touch()
        # The stale first request is answered to the old socket; the new request gets its own reply.
        reply = client.request("status", timeout_s=10)
        assert isinstance(reply, Reply) and reply.ok and reply.result == "status"
        client.close()
    finally:
        peer.wait(30)


def test_ingress_is_bounded_in_bytes_while_its_owner_cannot_take_and_loses_nothing(home: Path) -> None:
    """A supervisor that cannot take ingress now (a full disk) still moves what arrives into its buffer,
    up to the budget (bodies and each entry's own cost); the rest waits in the socket and the senders'
    queues, and everything is taken later, once each and in order."""
    info = new_bus_info(home, 1)
    write_bus_info(home, info)
    budget = 1024 * 1024
    server = BusServer(info, ingress_hwm=4, ingress_budget=budget)
    ctx = zmq.Context()
    push = ctx.socket(zmq.PUSH)
    push.setsockopt(zmq.SNDHWM, 1000)
    push.setsockopt(zmq.LINGER, 0)
    push.connect(info.ingress)
    text = "x" * 2000
    try:
        for n in range(200):  # about 18 KiB each: 3.6 MiB in all, over three budgets
            events = [Event(run_id=RUN, stage="generate", event_type="progress", message=f"m{n}.{i} {text[:400]}")
                      for i in range(30)]
            push.send_multipart(encode(info.key, "event", events, sender="agent", session="s", seq=n + 1))
        largest = 0
        for _ in range(100):  # the loop while held: control only, yet ingress is moved into the buffer
            assert not server.wait(0.01, ingress=False).ingress
            largest = max(largest, server.buffered_bytes)
        assert budget // 2 < largest <= budget + 64 * 1024 + 512, largest
        got: list[str] = []
        wait_until(lambda: server.wait(0.05).ingress and bool(take(server, got)) and len(got) >= 200 * 30, 60, 0.0,
                   "everything taken")
        assert got == [f"m{n}.{i}" for n in range(200) for i in range(30)]
        assert server.buffered_bytes == 0 and not server.bad.counts
    finally:
        push.close()
        ctx.term()
        server.close()


def take(server: BusServer, into: list[str]) -> int:
    before = len(into)
    for _header, body in server.recv_ingress():
        into.extend(e.message.split()[0] for e in server.decode_ingress_events(body))
    return len(into) - before
