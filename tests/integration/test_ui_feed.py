"""The UI feed against a real supervisor: deltas at most every 100 ms that account for every event, a
client that ends with the supervisor's state (joined early or late, after a lost delta, across a restart),
and the pages of older events (the ``events`` command, a viewer's; the dashboard's log loading them)."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq
from harness import SupervisorProc, agent_env, free_port_base, scripted, wait_until

from heidi_engine.bus.clients import issue_client
from heidi_engine.bus.codec import decode
from heidi_engine.bus.connection import read_bus_info
from heidi_engine.bus.control import ControlClient
from heidi_engine.bus.errors import CommandRefused
from heidi_engine.bus.journal import read_events
from heidi_engine.bus.message import FEED_EVENTS, FeedDelta
from heidi_engine.bus.remote import connect
from heidi_engine.bus.subscriber import FeedSubscriber
from heidi_engine.ui.dashboard.views.events import event_window
from heidi_engine.ui.viewer import EVENT_LOG, LiveView, is_marker

Start = Callable[..., SupervisorProc]
FLOOD = 20_000
# What changes without an event while a finished run sits still: the host sampler's figures, and seq.
VOLATILE = {"host", "gpus", "gpu_message", "seq"}


def _flooding(start_supervisor: Start, flood: int = FLOOD, *args: str) -> SupervisorProc:
    env = agent_env(scripted("--events", "0"), generate=scripted("--events", "0", "--flood", str(flood)))
    return start_supervisor(env=env, config="ROUNDS: 1\n", args=args).wait_ready()


def _poll_until(sub: FeedSubscriber, what: str, predicate: Callable[[], object], timeout_s: float = 30) -> None:
    wait_until(lambda: sub.poll(0.05) >= 0 and predicate(), timeout_s, 0.0, what)


def _caught_up(sup: SupervisorProc, sub: FeedSubscriber) -> dict[str, Any]:
    """The snapshot's state, once the client has applied everything up to it."""
    target = sup.call("snapshot")
    _poll_until(sub, "caught up with the snapshot", lambda: not sub._need_snapshot and sub.seq >= target["seq"])
    return dict(target["state"])


def _same(sub: FeedSubscriber, theirs: dict[str, Any]) -> None:
    mine = sub.state.model_dump(mode="json")
    differ = sorted(key for key in theirs if key not in VOLATILE and mine[key] != theirs[key])
    assert not differ, {key: (mine[key], theirs[key]) for key in differ[:3]}


@pytest.fixture
def client() -> Iterator[list[FeedSubscriber]]:
    made: list[FeedSubscriber] = []
    yield made
    for sub in made:
        sub.close()


def test_deltas_come_at_most_every_100_ms_and_account_for_every_event(start_supervisor: Start, home: Path) -> None:
    sup = _flooding(start_supervisor)
    info = read_bus_info(home)
    sock = zmq.Context.instance().socket(zmq.SUB)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SUBSCRIBE, b"feed")
    connect(sock, info, info.egress)
    deltas: list[tuple[float, FeedDelta]] = []

    def receive() -> None:
        while sock.poll(50):
            message = decode(sock.recv_multipart(), info.egress_key)
            assert isinstance(message.body, FeedDelta) and message.header.seq == message.body.seq
            deltas.append((message.header.ts, message.body))

    try:
        wait_until(lambda: receive() or deltas, 10, 0.0, "a first delta (the host sampler's)")
        before = len(deltas)
        run_id = sup.call("start")["run_id"]
        while sup.status()["status"] not in ("completed", "failed"):
            receive()
        final = sup.wait_status("completed")
        wait_until(lambda: receive() or deltas[-1][1].seq >= final["seq"], 10, 0.0, "the last delta")
    finally:
        sock.close()
    ours = deltas[before:]
    steps = [b.feed - a.feed for (_t, a), (_u, b) in itertools.pairwise(deltas)]
    assert set(steps) <= {1, 2} and steps.count(2) == 1, steps  # the new run's state skips a number
    # Every event is either carried or counted, in the order the log has them: the newest of each interval.
    log = [event.to_record() for event in read_events(home / "runs" / run_id)]
    at = 0
    for _ts, delta in ours:
        at += delta.left_out
        assert delta.events == log[at:at + len(delta.events)]
        at += len(delta.events)
    assert at == len(log) == final["accepted_events"]
    assert sum(d.left_out for _ts, d in ours) > 0 and all(len(d.events) <= FEED_EVENTS for _ts, d in ours)
    # Far fewer deltas than events, never two within 100 ms: the loop's clock says so; the headers' times,
    # taken as each is sent, may be a step's work closer on a busy machine.
    span = ours[-1][0] - ours[0][0]
    assert 1 <= len(ours) <= span / 0.1 + 2 and len(ours) < len(log) / 50, (len(ours), span)
    gaps = [b - a for (a, _d), (b, _e) in itertools.pairwise(ours)]
    assert min(gaps) >= 0.06 and sorted(gaps)[len(gaps) // 2] >= 0.1, gaps


def test_a_feed_client_ends_with_the_supervisors_state(start_supervisor: Start, home: Path,
                                                       client: list[FeedSubscriber]) -> None:
    sup = _flooding(start_supervisor)
    sub = FeedSubscriber(home)
    client.append(sub)
    _poll_until(sub, "joined", lambda: sub.snapshots >= 1)
    sup.call("start")
    while sup.status()["status"] not in ("completed", "failed"):
        sub.poll(0.05)
    assert sup.wait_status("completed")["accepted_events"] > FLOOD
    _same(sub, _caught_up(sup, sub))
    assert sub.deltas < FLOOD / 50 and sub.left_out > 0
    assert sub.snapshots <= 3  # joining, the new run's state, at most one more (a delta sent while subscribing)


def test_a_late_joiner_follows_from_its_snapshot(start_supervisor: Start, home: Path,
                                                 client: list[FeedSubscriber]) -> None:
    sup = start_supervisor(env=agent_env(scripted("--events", "100000", "--delay", "0.002")), config="ROUNDS: 1\n").wait_ready()
    sup.call("start")
    wait_until(lambda: sup.status()["accepted_events"] > 500, 30, what="run well under way")
    firsts: list[int] = []
    sub = FeedSubscriber(home, on_batch=lambda records, first: firsts.append(first))
    client.append(sub)
    _poll_until(sub, "joined and following", lambda: sub.snapshots >= 1 and sub.deltas >= 5)
    sup.call("pause")
    sup.wait_status("paused")
    expected = _caught_up(sup, sub)
    assert sub.gaps == 0 and sub.snapshots == 1
    _same(sub, expected)
    assert expected["recent_events"] == sub.state.recent_events and firsts == sorted(set(firsts))


class _Lossy(FeedSubscriber):
    """Loses its third delta, as a slow client's full queue would."""

    lost = 0

    def _apply(self, seq: int, body: Any) -> None:
        if isinstance(body, FeedDelta) and self.deltas == 2 and not self.lost:
            self.lost = body.feed
            return
        super()._apply(seq, body)


def test_a_lost_delta_leads_to_a_snapshot_and_the_right_state(start_supervisor: Start, home: Path,
                                                             client: list[FeedSubscriber]) -> None:
    sup = start_supervisor(env=agent_env(scripted("--events", "3000", "--delay", "0.001")), config="ROUNDS: 1\n").wait_ready()
    sup.call("start")
    wait_until(lambda: sup.status()["accepted_events"] > 100, 30, what="run under way")
    sub = _Lossy(home)
    client.append(sub)
    _poll_until(sub, "a delta lost and a snapshot taken", lambda: sub.lost and sub.snapshots >= 2)
    assert sub.gaps >= 1
    sup.wait_status("completed", timeout_s=120)
    _same(sub, _caught_up(sup, sub))


def test_a_restarted_supervisor_is_followed(start_supervisor: Start, home: Path, client: list[FeedSubscriber]) -> None:
    env = agent_env(scripted("--events", "3"))
    first = start_supervisor(env=env, config="ROUNDS: 1\n").wait_ready()
    sub = FeedSubscriber(home, stale_after_s=1.0)
    client.append(sub)
    _poll_until(sub, "connected", lambda: sub.connected)
    session = sub.supervisor
    first.kill9()
    _poll_until(sub, "noticed the silence", lambda: not sub.connected, 10)
    second = start_supervisor(env=env).wait_ready()
    run_id = second.call("start")["run_id"]
    second.wait_status("completed")
    _poll_until(sub, "followed the new supervisor", lambda: sub.state.status == "completed" and sub.state.run_id == run_id)
    assert sub.supervisor != session and sub.connected
    _same(sub, _caught_up(second, sub))


def test_pages_of_older_events_for_a_viewer(start_supervisor: Start, home: Path) -> None:
    listen = f"127.0.0.1:{free_port_base()}"
    sup = _flooding(start_supervisor, 3000, "--listen", listen)
    run_id = sup.call("start")["run_id"]
    final = sup.wait_status("completed")
    log = [event.to_record() for event in read_events(home / "runs" / run_id)]
    newest = sup.call("snapshot")["state"]["event_count"]
    assert newest == len(log) == final["accepted_events"]
    info = issue_client(home, "eye", listen, home / "eye.bus.json", "viewer")
    with ControlClient(info, timeout_s=10) as eye:
        page = eye.call("events", {"before": newest + 1, "limit": 500})
        assert page["run_id"] == run_id and page["events"] == log[-500:] and page["first"] == newest - 499
        older = eye.call("events", {"before": page["first"], "limit": 500, "run_id": run_id})
        assert older["events"] == log[-1000:-500] and older["more"]
        assert eye.call("events", {"before": 3})["events"] == log[:2]
        assert not eye.call("events", {"before": 3})["more"]
        with pytest.raises(CommandRefused, match="limit 501 is over the cap of 500"):
            eye.call("events", {"before": newest + 1, "limit": 501})
        with pytest.raises(CommandRefused, match="is not the run shown now"):
            eye.call("events", {"before": 10, "run_id": "run_20240101_000000_00000000"})
        with pytest.raises(CommandRefused, match=f"there is no event {newest + 1} yet"):
            eye.call("events", {"before": newest + 2})
        with pytest.raises(CommandRefused, match="pause is not allowed for client eye"):
            eye.call("pause")


def _view(live: LiveView, what: str, predicate: Callable[[list[dict[str, object]]], bool]) -> list[dict[str, object]]:
    found = live.wait_for(lambda view: predicate(list(view.events)), 20)
    assert found is not None, f"timed out waiting for {what}: {[e for e in live.latest().events if is_marker(e)]}"
    return list(found.events)


def test_the_dashboards_log_loads_older_events_and_fills_what_the_feed_left_out(start_supervisor: Start,
                                                                               home: Path) -> None:
    sup = _flooding(start_supervisor)
    live = LiveView(home, sender="dash", history=True).start()
    try:
        live.wait_for(lambda view: view.connected, 20)
        run_id = sup.call("start")["run_id"]
        sup.wait_status("completed", timeout_s=60)
        log = [event.to_record() for event in read_events(home / "runs" / run_id)]
        entries = _view(live, "the whole run", lambda events: any(e.get("event_type") == "pipeline_complete" for e in events))
        holes = [e for e in entries if is_marker(e) and not e["front"]]
        assert holes and all(e["note"] is None for e in holes)
        # Scrolled onto the markers (as the Events view does), each loads, a page at a time, until none is left.
        deadline = time.monotonic() + 60
        while True:
            view = live.latest()
            markers = [e for e in view.events if is_marker(e) and e["note"] is None and not e["front"]]
            if not markers or time.monotonic() > deadline:
                break
            for marker in markers[-4:]:
                view.events.want(marker)  # type: ignore[attr-defined]
            live.wait_for(lambda v, loads=view.loads: v.loads > loads, 5)
        entries = list(live.latest().events)
        records = [e for e in entries if not is_marker(e)]
        assert not [e for e in entries if is_marker(e) and not e["front"]], "holes left"
        assert records == log[-len(records):] and len(records) >= EVENT_LOG - 1
        front = entries[0]
        assert is_marker(front) and front["front"] and front["left_out"] == len(log) - len(records)
    finally:
        live.close()


def test_the_events_view_loads_older_events_when_scrolled_to_the_top(start_supervisor: Start, home: Path) -> None:
    sup = _flooding(start_supervisor, 1200)
    run_id = sup.call("start")["run_id"]
    sup.wait_status("completed")
    log = [event.to_record() for event in read_events(home / "runs" / run_id)]
    live = LiveView(home, sender="dash", history=True).start()
    try:
        entries = _view(live, "the snapshot's events", lambda events: len(events) > 100)
        assert is_marker(entries[0]) and entries[0]["front"] and entries[0]["left_out"] == len(log) - len(entries) + 1
        for _ in range(5):  # a page at a time: 500, then 500, then the rest
            view = live.latest()
            if not is_marker(view.events[0]):
                break
            event_window(view.events, "", 1 << 30, 30)  # Home: the top of the log, its marker in view
            assert live.wait_for(lambda v, loads=view.loads: v.loads > loads, 10) is not None
        assert list(live.latest().events) == log  # the run's first event is in: no marker left
        assert live.latest().loads == 3
    finally:
        live.close()
