"""The agents' publisher over a real socket: events coalesce into batches, order holds across kinds, a
lone event leaves without waiting for another, nothing queued is lost at close (not even when the
process exits right after it while the supervisor is behind), and a supervisor that takes nothing makes
send() fail in time instead of hanging or dropping."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import wait_until

from heidi_engine.bus.connection import BusInfo, new_bus_info, write_bus_info
from heidi_engine.bus.errors import BusError
from heidi_engine.bus.event import Event
from heidi_engine.bus.message import AgentStatus
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


def drain(bus: BusServer, into: list[object]) -> None:
    bus.wait(0.05)
    for header, body in bus.recv_ingress():
        if header.kind == "event":
            into.extend(e.message for e in bus.decode_ingress_events(body))
        else:
            into.append(bus.decode_ingress_body(header, body))


def test_a_burst_coalesces_in_order_and_close_loses_nothing(bus: BusServer) -> None:
    status = AgentStatus(stage="generate", pid=1, phase="done")
    with Publisher(bus.info, "generate:1") as pub:
        for i in range(3000):
            pub.send("event", event(i))
            if i == 1500:
                pub.send("state", status)
    got: list[object] = []
    wait_until(lambda: drain(bus, got) or len(got) >= 3001, 30, 0.0, "3000 events and one status")
    assert got == [f"n{i}" for i in range(1501)] + [status] + [f"n{i}" for i in range(1501, 3000)]
    assert pub.sent == 3001 and pub.batches < 3000 / 10, f"{pub.batches} batches for 3000 events"
    assert bus.bad.total == 0


def test_a_lone_event_leaves_without_another_send_or_close(bus: BusServer) -> None:
    pub = Publisher(bus.info, "generate:2")
    try:
        pub.send("event", event(0))
        got: list[object] = []
        wait_until(lambda: drain(bus, got) or got == ["n0"], 10, 0.0, "the lone event")
        pub.flush(5)
    finally:
        pub.close()


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
"""


def test_a_process_that_exits_right_after_close_has_delivered_everything(tmp_path: Path) -> None:
    """The agent's last events are still queued in libzmq when it closes and exits, and the supervisor
    reads nothing until then (its queue holds ten batches of the ~80): they must arrive all the same."""
    info = new_bus_info(tmp_path, 1)
    write_bus_info(tmp_path, info)
    server = BusServer(info, ingress_hwm=10)
    count = 20_000
    agent = subprocess.Popen([sys.executable, "-c", EXITING_AGENT, str(tmp_path), str(count)],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    try:
        wait_until(lambda: (tmp_path / "closing").exists() or agent.poll() is not None, 60, 0.01, "all sent")
        got: list[object] = []
        deadline = time.monotonic() + 120
        while len(got) < count and time.monotonic() < deadline:
            drain(server, got)
            if agent.poll() is not None and not server.wait(0.5).ingress:
                break  # the agent is gone and nothing more is coming
        output = agent.communicate(timeout=60)[0]
        assert agent.returncode == 0, output
        missing = sorted(set(range(count)) - {int(str(m)[1:]) for m in got})
        assert got == [f"n{i}" for i in range(count)], (
            f"{len(got)} of {count} events arrived (missing {missing[:3]}…{missing[-3:]}, bad {dict(server.bad.counts)}); "
            f"agent said: {output}")
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()
        server.close()
