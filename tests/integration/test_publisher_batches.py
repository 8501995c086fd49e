"""The agents' publisher over a real socket: events coalesce into batches, order holds across kinds, a
lone event leaves without waiting for another, nothing queued is lost at close (not even when the
process exits right after it while the supervisor is behind, or has stopped reading: what it did not
confirm is sent again and the copies are dropped), and a supervisor that takes nothing makes send()
fail in time instead of hanging or dropping."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import wait_until

from heidi_engine.bus.connection import BusInfo, new_bus_info, write_bus_info
from heidi_engine.bus.control import ControlClient
from heidi_engine.bus.delivery import DELIVERY_QUERY
from heidi_engine.bus.errors import BusError
from heidi_engine.bus.event import Event
from heidi_engine.bus.message import AgentStatus, Reply
from heidi_engine.bus.publisher import Publisher
from heidi_engine.bus.server import BusServer

RUN = "run_20240215_123456_abc12345"


def event(i: int) -> Event:
    return Event(run_id=RUN, stage="generate", event_type="progress", message=f"n{i}")


@pytest.fixture(scope="module")
def bus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BusServer]:
    home = tmp_path_factory.mktemp("pub")
    info = new_bus_info(home, 1)
    write_bus_info(home, info)
    server = BusServer(info)
    yield server
    server.close()


def drain(bus: BusServer, into: list[object], *, read: bool = True) -> None:
    """One turn of a supervisor's loop: answer delivery queries, and (unless not ``read``) take ingress."""
    bus.wait(0.05, ingress=read)
    bus.recv_command()  # answers the publishers' delivery queries itself
    if not read:
        return
    for header, body in bus.recv_ingress():
        if header.kind == "event":
            into.extend(e.message for e in bus.decode_ingress_events(body))
        else:
            into.append(bus.decode_ingress_body(header, body))


def close_while_serving(bus: BusServer, pub: Publisher, got: list[object]) -> None:
    """Close ``pub`` (it waits for the server to confirm what it sent) while this thread serves the bus."""
    closer = threading.Thread(target=pub.close)
    closer.start()
    while closer.is_alive():
        drain(bus, got)
    closer.join()


def test_a_burst_coalesces_in_order_and_close_loses_nothing(bus: BusServer) -> None:
    status = AgentStatus(stage="generate", pid=1, phase="done")
    pub = Publisher(bus.info, "generate:1")
    for i in range(3000):
        pub.send("event", event(i))
        if i == 1500:
            pub.send("state", status)
    got: list[object] = []
    close_while_serving(bus, pub, got)
    assert pub.confirmed is True and pub.undelivered == 0 and pub.resent == 0
    wait_until(lambda: drain(bus, got) or len(got) >= 3001, 30, 0.0, "3000 events and one status")
    assert got == [f"n{i}" for i in range(1501)] + [status] + [f"n{i}" for i in range(1501, 3000)]
    assert pub.sent == 3001 and pub.batches < 3000 / 10, f"{pub.batches} batches for 3000 events"
    assert bus.bad.total == 0


def test_a_lone_event_leaves_without_another_send_or_close(bus: BusServer) -> None:
    pub = Publisher(bus.info, "generate:2")
    got: list[object] = []
    try:
        pub.send("event", event(0))
        wait_until(lambda: drain(bus, got) or got == ["n0"], 10, 0.0, "the lone event")
        pub.flush(5)
    finally:
        close_while_serving(bus, pub, got)
    assert got == ["n0"] and pub.confirmed is True


def test_send_fails_in_time_when_nothing_takes_messages(tmp_path: Path) -> None:
    nobody: BusInfo = new_bus_info(tmp_path, 1)  # no supervisor bound there
    pub = Publisher(nobody, "generate:3", send_timeout_s=0.3, linger_s=0.2, hwm=1)
    try:
        with pytest.raises(BusError, match="has not taken"):
            for i in range(5000):
                pub.send("event", event(i))
    finally:
        pub.close()
    with pytest.raises(BusError, match=r"closed|linger"):
        pub.send("event", event(0))


def test_bad_arguments_are_refused_clearly(bus: BusServer) -> None:
    with pytest.raises(ValueError, match="max_batch"):
        Publisher(bus.info, "x", max_batch=0)
    with Publisher(bus.info, "x") as pub, pytest.raises(ValueError, match="unknown message kind"):
        pub.send("nonsense", event(0))


EXITING_AGENT = """
import sys
from pathlib import Path
from heidi_engine.bus.connection import read_bus_info
from heidi_engine.bus.event import Event
from heidi_engine.bus.publisher import Publisher
home, count = Path(sys.argv[1]), int(sys.argv[2])
pub = Publisher(read_bus_info(home), "generate:9")
for i in range(count):
    pub.send("event", Event(run_id="run_20240215_123456_abc12345", stage="generate", event_type="progress",
                            message=f"n{i}"))
(home / "closing").touch()
pub.close()
print(f"sent {pub.sent} in {pub.batches} batches, resent {pub.resent}, undelivered {pub.undelivered}, "
      f"confirmed {pub.confirmed}", flush=True)
"""


def exiting_agent(tmp_path: Path, server: BusServer, count: int, *, stop_reading_s: float = 0.0,
                  until_exit: bool = False) -> tuple[list[object], str]:  # fmt: skip
    """Run an agent that sends ``count`` events and exits right after its close; the server reads nothing
    until the agent is closing, then (after ``stop_reading_s`` more, or until the agent has exited,
    answering queries only) everything. What arrived, and what the agent said (figures, exit status)."""
    agent = subprocess.Popen([sys.executable, "-c", EXITING_AGENT, str(tmp_path), str(count)],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    got: list[object] = []
    try:
        wait_until(lambda: (tmp_path / "closing").exists() or agent.poll() is not None, 60, 0.01, "all sent")
        if stop_reading_s:
            # From the agent's first delivery query on (it said how many it sent, none has been read).
            wait_until(lambda: drain(server, got, read=False) or server.receipts.undelivered("generate:9")
                       or agent.poll() is not None, 60, 0.0, "the agent's first delivery query")  # fmt: skip
            resume_at = time.monotonic() + stop_reading_s
            while time.monotonic() < resume_at:
                drain(server, got, read=False)
        if until_exit:
            wait_until(lambda: drain(server, got, read=False) or agent.poll() is not None, 60, 0.0, "the agent's exit")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            drain(server, got)
            if agent.poll() is not None and not server.wait(0.5).ingress:
                break  # the agent is gone and nothing more is coming
        output = agent.communicate(timeout=60)[0]
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()
    return got, f"exit status {agent.returncode}; agent said: {output}"


def check_all_once(got: list[object], count: int, server: BusServer, said: str) -> None:
    missing = sorted(set(range(count)) - {int(str(m)[1:]) for m in got})
    assert got == [f"n{i}" for i in range(count)], (
        f"{len(got)} of {count} events arrived (missing {missing[:3]}…{missing[-3:]}, bad {dict(server.bad.counts)}, "
        f"copies dropped {server.receipts.duplicates}); {said}")


@pytest.mark.parametrize("ingress_hwm", [1, 10])
def test_a_process_that_exits_right_after_close_has_delivered_everything(tmp_path: Path, ingress_hwm: int) -> None:
    """The agent's last events are still queued when it closes and exits, and the supervisor reads
    nothing until then (its queue holds one or ten batches of the ~80): they must arrive all the same."""
    info = new_bus_info(tmp_path, 1)
    write_bus_info(tmp_path, info)
    server = BusServer(info, ingress_hwm=ingress_hwm)
    try:
        got, said = exiting_agent(tmp_path, server, 20_000)
        assert said.startswith("exit status 0;") and "confirmed True" in said, said
        check_all_once(got, 20_000, server, said)
    finally:
        server.close()


def test_a_supervisor_that_stops_reading_while_an_agent_closes_gets_a_resend_counted_once(tmp_path: Path) -> None:
    """The supervisor answers queries but reads no ingress for 2 s while the agent closes: the agent
    sees no progress and sends its unconfirmed messages again; the originals and then the copies that
    were not overtaken by the confirmation arrive, every copy is dropped, and each event counts once."""
    info = new_bus_info(tmp_path, 1)
    write_bus_info(tmp_path, info)
    server = BusServer(info, ingress_hwm=10)
    try:
        got, said = exiting_agent(tmp_path, server, 5_000, stop_reading_s=2.0)
        assert said.startswith("exit status 0;") and "confirmed True" in said, said
        resent = int(said.split("resent ")[1].split(",")[0])
        assert resent > 0, said
        check_all_once(got, 5_000, server, said)
        assert 0 < server.receipts.duplicates <= resent, said  # copies still queued at the confirmation are not sent
    finally:
        server.close()


def test_a_publisher_may_ask_only_about_its_own_messages_and_learns_who_answers(bus: BusServer) -> None:
    got: list[object] = []
    with ControlClient(bus.info, sender="generate:5", timeout_s=5) as client:
        answers: list[Reply] = []
        for sender in ("generate:5", "generate:6"):
            asking = threading.Thread(target=lambda s=sender: answers.append(client.request(
                DELIVERY_QUERY, {"sender": s, "session": "abc", "sent": 3})))  # fmt: skip
            asking.start()
            while asking.is_alive():
                drain(bus, got)
            asking.join()
    own, other = answers
    assert own.ok and own.result == {"through": 0, "missing": [], "forgotten": 0, "server": bus.info.session,
                                     "reading": True}
    assert not other.ok and "its own messages only" in (other.error or "")
    assert bus.receipts.undelivered("generate:5") == 3 and bus.receipts.undelivered("generate:6") == 0


def test_an_agent_leaves_a_supervisor_that_cannot_read_now_and_its_messages_wait_in_the_socket(tmp_path: Path) -> None:
    """A supervisor whose disk is full answers but does not read: the agent does not wait out its linger
    for a confirmation that cannot come; what it sent waits in the supervisor's socket and is read, once
    each, when the supervisor reads again."""
    info = new_bus_info(tmp_path, 1)
    write_bus_info(tmp_path, info)
    server = BusServer(info)
    server.reading = False
    try:
        got, said = exiting_agent(tmp_path, server, 5_000, until_exit=True)
        assert said.startswith("exit status 0;") and "confirmed None" in said and "resent 0" in said, said
        check_all_once(got, 5_000, server, said)
    finally:
        server.close()
