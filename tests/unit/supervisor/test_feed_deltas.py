"""The UI feed's parts without sockets: the supervisor's deltas (UiFeed), a client applying them
(FeedSubscriber), and the pages of older events (read_page)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

import pytest

from heidi_engine.bus.codec import decode_body
from heidi_engine.bus.event import Event
from heidi_engine.bus.message import FEED_EVENTS, FeedDelta, Heartbeat
from heidi_engine.bus.server import BusServer
from heidi_engine.bus.state import RECENT_EVENTS, RunState, StatusPatch, apply_events, apply_status
from heidi_engine.bus.subscriber import FeedSubscriber
from heidi_engine.supervisor import ui_feed
from heidi_engine.supervisor.ui_feed import FEED_INTERVAL_S, PAGE_DEPTH_MAX, UiFeed, read_page

RUN = "run_20240215_123456_abc12345"


class FakeServer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, FeedDelta, int | None]] = []

    def publish(self, kind: str, body: bytes, seq: int | None) -> None:
        self.sent.append((kind, decode_body(kind, body), seq))


def _events(count: int, start: int = 0) -> list[tuple[Event, dict[str, Any]]]:
    events = [Event(run_id=RUN, round=1, stage="generate", event_type="progress", message=f"e {start + i}",
                    counters_delta={"teacher_generated": 1}) for i in range(count)]
    return [(event, event.to_record()) for event in events]


class Supervised:
    """What the supervisor's loop does with its state and the feed, by hand."""

    def __init__(self) -> None:
        self.server = FakeServer()
        self.feed = UiFeed(cast(BusServer, self.server))
        self.state = RunState()
        self.seq = 0
        self.now = 100.0

    def accept(self, count: int) -> None:
        written = _events(count, self.state.event_count)
        apply_events(self.state, written)
        self.feed.accept(written)
        self.seq += count
        self.state.seq = self.seq

    def status(self, **fields: Any) -> None:
        apply_status(self.state, StatusPatch.model_validate(fields))
        self.seq += 1
        self.state.seq = self.seq

    def tick(self, after_s: float = FEED_INTERVAL_S * 1.5) -> bool:
        self.now += after_s
        return self.feed.tick(self.now, self.state, self.seq)

    def snapshot(self) -> dict[str, Any]:
        self.feed.flush(self.now, self.state, self.seq)
        return {"seq": self.seq, "session": "s", "state": self.state.model_dump(mode="json"),
                "feed": self.feed.counter}

    def deltas(self) -> list[FeedDelta]:
        return [body for _kind, body, _seq in self.server.sent]


def _client(tmp_path: Path, snapshot: dict[str, Any], **kwargs: Any) -> FeedSubscriber:
    client = FeedSubscriber(tmp_path, **kwargs)
    client.state = RunState.model_validate(snapshot["state"])
    client.seq = snapshot["seq"]
    client._took_snapshot(snapshot)
    client._need_snapshot = False
    return client


def test_a_delta_at_most_every_interval_and_only_when_something_changed() -> None:
    sup = Supervised()
    sup.accept(3)
    assert sup.tick() and not sup.tick(0.05)  # too soon
    sup.accept(1)
    assert not sup.tick(0.04)  # too soon, though something changed
    assert sup.tick(0.02)
    assert not sup.tick()  # nothing changed
    first, second = sup.deltas()
    assert (first.feed, second.feed) == (1, 2) and second.seq == 4
    assert set(second.fields) >= {"counters", "event_count", "seq"} and "recent_events" not in second.fields
    assert "config" not in second.fields and "status" not in second.fields  # unchanged fields stay home
    assert [e["message"] for e in second.events] == ["e 3"] and second.left_out == 0


def test_the_newest_events_travel_and_the_rest_are_counted() -> None:
    sup = Supervised()
    sup.accept(FEED_EVENTS + 250)
    sup.tick()
    (delta,) = sup.deltas()
    assert len(delta.events) == FEED_EVENTS and delta.left_out == 250
    assert delta.events[-1]["message"] == f"e {FEED_EVENTS + 249}" and delta.events[0]["message"] == "e 250"


def test_a_client_applies_deltas_to_the_state_the_supervisor_has(tmp_path: Path) -> None:
    sup = Supervised()
    sup.accept(5)
    sup.tick()
    batches: list[tuple[int, int]] = []
    holes: list[tuple[int, int]] = []
    client = _client(tmp_path, sup.snapshot(), on_batch=lambda records, first: batches.append((len(records), first)),
                     on_left_out=lambda count, first: holes.append((count, first)))
    sup.status(status="running", run_id=RUN, total_rounds=3)
    sup.accept(RECENT_EVENTS + 30)
    sup.tick()
    sup.accept(7)
    sup.tick()
    for delta in sup.deltas()[1:]:
        client._apply(delta.seq, delta)
    assert client.state.model_dump(mode="json") == sup.state.model_dump(mode="json")
    assert client.seq == sup.seq and client.feed == 3 and client.deltas == 2 and client.snapshots == 0
    assert holes == [(30, 36)]
    assert batches == [(FEED_EVENTS, 36), (7, 5 + RECENT_EVENTS + 30 + 1)]


def test_a_missing_delta_or_a_replaced_state_asks_for_a_snapshot(tmp_path: Path) -> None:
    sup = Supervised()
    client = _client(tmp_path, sup.snapshot())
    for _ in range(3):
        sup.accept(2)
        sup.tick()
    one, _two, three = sup.deltas()[-3:]
    client._apply(one.seq, one)
    client._apply(three.seq, three)  # the second one was lost
    assert client._need_snapshot and client.gaps == 1
    client = _client(tmp_path, sup.snapshot())
    sup.state = RunState(run_id=RUN, seq=sup.seq)  # a new run: not a change on top of the last delta
    sup.accept(1)
    sup.tick()
    replaced = sup.deltas()[-1]
    assert replaced.feed == client.feed + 2
    client._apply(replaced.seq, replaced)
    assert client._need_snapshot


def test_a_snapshot_flushes_the_feed_so_the_next_delta_follows_it(tmp_path: Path) -> None:
    sup = Supervised()
    sup.accept(1)
    sup.tick()
    sup.status(pause_requested=True)  # changed and changed back between two deltas: no delta would say
    snapshot = sup.snapshot()
    sup.status(pause_requested=False)
    client = _client(tmp_path, snapshot)
    assert client.state.pause_requested
    sup.tick()
    delta = sup.deltas()[-1]
    assert delta.feed == client.feed + 1 and delta.fields["pause_requested"] is False
    client._apply(delta.seq, delta)
    assert client.state.model_dump(mode="json") == sup.state.model_dump(mode="json")


def test_a_client_behind_a_heartbeat_at_the_next_one_missed_a_delta(tmp_path: Path) -> None:
    sup = Supervised()
    client = _client(tmp_path, sup.snapshot())
    sup.accept(3)
    # The heartbeat may pass the delta that brings the client to its seq (a delta waits up to 100 ms)...
    client._apply(sup.seq, Heartbeat(seq=sup.seq))
    assert not client._need_snapshot
    sup.tick()
    delta = sup.deltas()[-1]
    client._apply(delta.seq, delta)
    client._apply(sup.seq, Heartbeat(seq=sup.seq))
    assert not client._need_snapshot
    # ...but a delta at or past it leaves before the next heartbeat: still behind then, one was lost.
    sup.accept(2)
    client._apply(sup.seq, Heartbeat(seq=sup.seq))
    sup.tick()  # lost on its way
    client._apply(sup.seq, Heartbeat(seq=sup.seq))
    assert client._need_snapshot and client.gaps == 1


def test_a_delta_that_does_not_fit_the_state_is_counted_and_asks_for_a_snapshot(tmp_path: Path) -> None:
    client = _client(tmp_path, Supervised().snapshot())
    client._apply(5, FeedDelta(feed=client.feed + 1, seq=5, fields={"status": "dancing"}))
    assert client._need_snapshot and client.bad_messages["bad_feed"] == 1
    client._apply(5, FeedDelta(feed=client.feed + 1, seq=5, events=[{"message": "fine"}, "not a record"]))
    assert client.bad_messages["bad_feed"] == 2 and client.state.recent_events == []


def test_a_feed_subscriber_gets_records_not_events(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="on_batch"):
        FeedSubscriber(tmp_path, on_event=lambda _event, _seq: None)


# -- pages -----------------------------------------------------------------------------------------------


@pytest.fixture
def run_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """1,000 events in three generations (and a torn last line), read in small blocks."""
    monkeypatch.setattr(ui_feed, "_BLOCK", 97)
    lines = [json.dumps({"n": n, "pad": "x" * (n % 37)}) for n in range(1, 1001)]
    (tmp_path / "events.jsonl.2").write_text("\n".join(lines[:300]) + "\n")
    (tmp_path / "events.jsonl.1").write_text("\n".join(lines[300:650]) + "\n")
    (tmp_path / "events.jsonl").write_text("\n".join(lines[650:]) + '\n{"torn')
    return tmp_path


@pytest.mark.parametrize(("before", "limit"), [(1001, 10), (1001, 500), (700, 100), (651, 1), (301, 5), (400, 500),
                                               (651, 351), (5, 10), (2, 1), (1, 10)])  # fmt: skip
def test_a_page_is_the_events_before_a_number_across_generations(run_dir: Path, before: int, limit: int) -> None:
    page = read_page(run_dir, 1000, before, limit)
    expected = list(range(max(1, before - limit), before))
    assert [e["n"] for e in page["events"]] == expected
    assert page["first"] == (expected[0] if expected else before)
    assert page["more"] == (bool(expected) and expected[0] > 1)


def test_a_page_past_the_newest_or_too_far_back_is_refused(run_dir: Path) -> None:
    with pytest.raises(ValueError, match="there is no event 1001 yet"):
        read_page(run_dir, 1000, 1002, 10)
    with pytest.raises(ValueError, match=f"at most {PAGE_DEPTH_MAX:,} events back"):
        read_page(run_dir, PAGE_DEPTH_MAX + 10, 11, 10)
