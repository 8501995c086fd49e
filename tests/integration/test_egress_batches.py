"""The supervisor's egress batches over a real socket: seq runs on per event from batch to batch, and a
batch of events with long artifact lists is split so that no message exceeds what a viewer accepts."""

from __future__ import annotations

from pathlib import Path

import zmq
from harness import wait_until

from heidi_engine.bus.codec import decode
from heidi_engine.bus.connection import new_bus_info
from heidi_engine.bus.event import Event
from heidi_engine.supervisor.broker import EGRESS_MAX_BYTES, Supervisor

RUN = "run_20240215_123456_abc12345"


def test_large_batches_are_split_and_seq_counts_every_event(home: Path) -> None:
    sup = Supervisor(home, new_bus_info(home, 1), config_path=None, env={})
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"event")
    try:
        sub.connect(sup.info.egress)
        probe = Event(run_id=RUN, stage="train", event_type="progress", message="probe").to_record()
        # A PUB drops what it sends before the subscription arrives: publish probes until one is heard.
        wait_until(lambda: sup._publish_records([probe]) or sub.poll(50), 10, 0.0, "subscription")
        while sub.poll(200):
            sub.recv_multipart()
        paths = [f"adapters/round_1/{'x' * 230}/{i}.json" for i in range(40)]
        records = [Event(run_id=RUN, stage="train", event_type="progress", message=f"n{i}",
                         artifact_paths=paths).to_record() for i in range(300)]
        first = sup.seq + 1
        for start in range(0, 300, 256):
            sup._publish_records(records[start:start + 256])
        got: list[str] = []
        sizes: list[int] = []
        expected = first
        while len(got) < 300 and sub.poll(5000):
            frames = sub.recv_multipart()
            message = decode(frames, sup.info.key)
            assert message.header.seq == expected, (message.header.seq, expected)
            expected += len(message.body)
            got.extend(e.message for e in message.body)
            sizes.append(sum(len(f) for f in frames))
        assert got == [f"n{i}" for i in range(300)]
        assert len(sizes) > 3 and max(sizes) <= EGRESS_MAX_BYTES + 1024, sizes
        assert sup.seq == first + 299
    finally:
        sub.close()
        ctx.term()
        sup.close()
