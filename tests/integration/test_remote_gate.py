"""The CURVE gate against hostile client records and revocations, on a real bus server in this process.

Whatever lands in ``keys/clients/`` (a FIFO, a link, a huge file, deep JSON, a certificate without a key),
admission goes on for the clients whose records are sound; a revocation's rebind of the publishing socket
leaves the connection count true. Loopback only.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import zmq
from harness import free_port_base

from heidi_engine.bus.clients import clients_dir, issue_client, list_clients, load_clients, revoke_client
from heidi_engine.bus.codec import encode
from heidi_engine.bus.connection import BusInfo, new_bus_info
from heidi_engine.bus.control import ControlClient
from heidi_engine.bus.keys import publish_key_hex
from heidi_engine.bus.message import AgentStatus, Command, Reply
from heidi_engine.bus.remote import connect
from heidi_engine.bus.server import BusServer


def _plant_hostile_records(folder: Path) -> None:
    os.mkfifo(folder / "fifo.json")  # reading it would block for ever
    (folder / "huge.json").write_text("{" + " " * 100_000 + "}")
    (folder / "deep.json").write_text("[" * 4000 + "]" * 4000)
    (folder / "role.json").write_text('{"role": "root", "public_key": "' + "x" * 40 + '", "key_hex": "' + "0" * 64 + '"}')
    (folder / "nokey.key").write_text("metadata\ncurve\n    public-key\n")  # no '=': pyzmq's reader fails
    (folder / "link.json").symlink_to("/etc/passwd")


def test_hostile_records_are_skipped_saying_why_and_the_sound_ones_load(tmp_path: Path) -> None:
    sound = issue_client(tmp_path, "sound", "127.0.0.1:5700", tmp_path / "sound.bus.json")
    _plant_hostile_records(clients_dir(tmp_path))
    problems: list[str] = []
    clients = list_clients(tmp_path, problems)
    assert [c.name for c in clients] == ["sound"] and clients[0].public_key == sound.public_key.encode()
    said = "\n".join(problems)
    for name, why in [("fifo.json", "not a regular file"), ("huge.json", "larger than"), ("deep.json", ""),
                      ("role.json", "role 'root'"), ("nokey.key", "no public-key"), ("link.json", "")]:  # fmt: skip
        assert f"{name}: {why}" in said, said


@pytest.fixture
def listening(tmp_path: Path) -> Iterator[tuple[BusServer, Path]]:
    home = tmp_path / "home"
    home.mkdir()
    info = new_bus_info(home, os.getpid(), listen=f"127.0.0.1:{free_port_base()}", egress_key_hex=publish_key_hex(home))
    server = BusServer(info)
    try:
        yield server, home
    finally:
        server.close()


def _serve_until(server: BusServer, done: Callable[[], bool], timeout_s: float = 20) -> None:
    """Run the server's side (answer pings, take ingress, follow the client records) until ``done()``."""
    deadline = time.monotonic() + timeout_s
    while not done():
        gate = server.remote._gate if server.remote is not None else None
        assert time.monotonic() < deadline, (f"timed out; refused so far: {dict(server.bad.counts)}; "
                                             f"gate: {None if gate is None else dict(gate.counts)}; "
                                             f"connections: {None if gate is None else gate.conns}")
        server.wait(0.05)
        while (got := server.recv_command()) is not None:
            caller, command = got
            server.reply(caller, Reply(id=command.id, ok=True, result={"pong": True}))
        server.recv_ingress()


def _client(home: Path, server: BusServer, name: str, role: str = "operator") -> BusInfo:
    assert server.info.listen
    return issue_client(home, name, server.info.listen, home / f"{name}.bus.json", role)


def test_admission_goes_on_whatever_lands_among_the_records(listening: tuple[BusServer, Path]) -> None:
    server, home = listening
    _plant_hostile_records(clients_dir(home))
    info = _client(home, server, "late")  # issued after the hostile files: the gate must read past them
    answered: list[object] = []
    with ControlClient(info, timeout_s=10) as client:
        thread = threading.Thread(target=lambda: answered.append(client.call("ping")))
        thread.start()
        _serve_until(server, lambda: bool(answered))
        thread.join(5)
    assert answered == [{"pong": True}]
    assert server.problem is None, server.problem
    assert load_clients(home)  # the folder still reads


def test_a_remote_client_cannot_speak_for_an_agent(listening: tuple[BusServer, Path]) -> None:
    server, home = listening
    info = _client(home, server, "ops")
    push = zmq.Context.instance().socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 1000)
    connect(push, info, info.ingress)
    try:
        push.send_multipart(encode(info.key, "state", AgentStatus(stage="train", pid=1, phase="parked"),
                                   sender="train:1", session="s"))  # fmt: skip
        _serve_until(server, lambda: server.bad.counts.get("ingress:not_allowed", 0) >= 1)
    finally:
        push.close()
    assert server.buffered_bytes == 0


def test_a_viewer_may_not_ask_after_deliveries(listening: tuple[BusServer, Path]) -> None:
    server, home = listening
    info = _client(home, server, "eye", "viewer")
    dealer = zmq.Context.instance().socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    connect(dealer, info, info.control)
    try:
        query = Command(id="q", name="delivered", args={"sender": "train:1", "session": "s", "sent": 5})
        dealer.send_multipart(encode(info.key, "command", query, sender="train:1", session="s"))
        _serve_until(server, lambda: server.bad.counts.get("control:not_allowed", 0) >= 1)
    finally:
        dealer.close()


def test_a_revocations_rebind_leaves_the_connection_count_true(listening: tuple[BusServer, Path]) -> None:
    server, home = listening
    assert server.remote is not None
    gate = server.remote._gate  # the count the cap is kept by
    egress = server.remote._bound[1].encode()
    subs, keys = [], []
    for i in range(3):
        info = _client(home, server, f"v{i}", "viewer")
        sub = zmq.Context.instance().socket(zmq.SUB)
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        connect(sub, info, info.egress)
        subs.append(sub)
        keys.append(info.public_key.encode())
    try:
        # Served meanwhile, as a supervisor would be; a timeout names the refusals and the descriptors counted.
        _serve_until(server, lambda: gate.open(egress) == 3)
        for round_no in range(3):  # each revocation rebinds the PUB endpoint; the others reconnect
            revoke_client(home, f"v{round_no}")
            _serve_until(server, lambda k=keys[round_no]: k not in gate.admitted)  # type: ignore[misc]
            subs[round_no].close()  # a revoked client tries again and again, each try counted and gone
            expected = 2 - round_no
            _serve_until(server, lambda e=expected: gate.open(egress) == e)  # type: ignore[misc]
            settled = time.monotonic() + 1.0  # the reconnects (100 ms apart) have come by now: counted once
            _serve_until(server, lambda s=settled: time.monotonic() > s)  # type: ignore[misc]
            assert gate.open(egress) == expected, dict(gate.conns)
    finally:
        for sub in subs:
            sub.close()
