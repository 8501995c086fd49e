"""The browser page's HTTP side against a real supervisor, without a browser: the page's files and headers,
the stream over a real socket (frames, resume with Last-Event-ID), the data routes' errors, no secret in
any response, and the supervisor-run server's control token."""

from __future__ import annotations

import http.client
import json
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness import HttpProc, SupervisorProc, agent_env, free_port_base, scripted, wait_until

from heidi_engine.bus.connection import read_bus_info
from heidi_engine.bus.event import Event
from heidi_engine.bus.publisher import Publisher
from heidi_engine.ui.http.control import TOKEN_FILE

SLOW_AGENT = agent_env(scripted("--events", "400", "--delay", "0.02", "--samples"))
FAKE_KEY = "sk-proj-Q3xv9LmT2aZkR8pWc1NbYh4dJf7GsE0u"
Start = Callable[..., SupervisorProc]


def _running(start_supervisor: Start) -> SupervisorProc:
    sup = start_supervisor(env=SLOW_AGENT, config="ROUNDS: 1\n").wait_ready()
    sup.call("start")
    sup.wait_status("running")
    return sup


class Stream:
    """An open ``GET /api/stream``: reads frames as they come."""

    def __init__(self, port: int, last_id: str | None = None) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        self.conn.request("GET", "/api/stream", headers={"Last-Event-ID": last_id} if last_id else {})
        self.reply = self.conn.getresponse()
        self._buffer = b""

    def frames(self, count: int, timeout_s: float = 10) -> list[tuple[str | None, str, dict[str, Any]]]:
        """The next ``count`` frames that are not pings: ``(id, event, data)``."""
        found: list[tuple[str | None, str, dict[str, Any]]] = []
        deadline = time.monotonic() + timeout_s
        while len(found) < count:
            assert time.monotonic() < deadline, f"only {len(found)} frames in {timeout_s} s: {self._buffer[:300]!r}"
            while b"\n\n" not in self._buffer:
                chunk = self.reply.read1(65536)
                assert chunk, f"the stream ended; {len(found)} frames read"
                self._buffer += chunk
            block, self._buffer = self._buffer.split(b"\n\n", 1)
            fields = dict(line.split(": ", 1) for line in block.decode().splitlines() if ": " in line)
            if fields.get("event") not in (None, "ping"):
                found.append((fields.get("id"), fields["event"], json.loads(fields["data"])))
        return found

    def raw(self, seconds: float) -> bytes:
        """Everything the stream sends for ``seconds``."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self._buffer += self.reply.read1(65536)
        return self._buffer

    def close(self) -> None:
        self.conn.close()


def test_the_page_is_served_with_a_strict_policy(home: Path, http_server: Callable[[], HttpProc]) -> None:
    server = http_server()
    page = server.get("/ui")
    assert page.status == 200 and page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert page.headers["x-frame-options"] == "DENY" and "access-control-allow-origin" not in page.headers
    assert b"app.js" in page.body and b"<script>" not in page.body  # no inline script (the policy forbids it)
    for asset, kind in (("/ui/app.js", "text/javascript"), ("/ui/app.css", "text/css")):
        reply = server.get(asset)
        assert reply.status == 200 and reply.headers["content-type"].startswith(kind) and reply.body
    # A browser asking / for HTML gets the page; a script still gets the seed's JSON.
    browser = server.request("GET", "/", headers={"Accept": "text/html,application/xhtml+xml"})
    assert browser.status == 303 and browser.headers["location"] == "/ui"
    assert server.get("/").json()["status"] == "idle"
    # Without a supervisor, the data routes still answer (the page says the supervisor is down).
    snapshot = server.get("/api/snapshot").json()
    assert snapshot["link"]["health"] == "down" and snapshot["control"] is False
    assert server.get("/api/events?before=10").status == 503
    assert server.get("/api/runs").json() == {"runs": []}
    head = server.request("HEAD", "/api/stream", timeout_s=5)  # the headers, then the end: no stream
    assert head.status == 200 and head.headers["content-type"].startswith("text/event-stream") and head.body == b""
    assert server.request("POST", "/api/control/pause").status == 403
    assert server.request("POST", "/status").status == 405


def test_the_stream_follows_the_run_and_resumes_where_it_left_off(
    home: Path, start_supervisor: Start, http_server: Callable[[], HttpProc]
) -> None:
    sup = _running(start_supervisor)
    server = http_server()
    run_id = sup.status()["run_id"]
    wait_until(lambda: server.get("/api/snapshot").json()["state"]["run_id"] == run_id, 15, 0.05, "the server on the run")
    stream = Stream(server.port)
    try:
        (snap_id, kind, snapshot), *deltas = stream.frames(4)
        assert kind == "snapshot" and snapshot["state"]["run_id"] == run_id
        assert [k for _i, k, _d in deltas] == ["delta"] * 3
        numbers = [int(str(i).rsplit("-", 1)[1]) for i, _k, _d in [(snap_id, kind, snapshot), *deltas]]
        assert numbers == list(range(numbers[0], numbers[0] + 4)), numbers
        # Each delta's events continue the numbering where the previous one ended.
        newest = snapshot["first"] + len(snapshot["events"]) - 1
        for _id, _kind, delta in deltas:
            if delta["events"]:
                assert delta["first"] - delta["left_out"] == newest + 1, (newest, delta["first"], delta["left_out"])
                newest = delta["first"] + len(delta["events"]) - 1
        last_id = deltas[-1][0]
    finally:
        stream.close()
    again = Stream(server.port, last_id)
    try:
        (resumed_id, kind, _data), = again.frames(1)
        assert kind == "delta" and int(str(resumed_id).rsplit("-", 1)[1]) == numbers[-1] + 1
    finally:
        again.close()
    stale = Stream(server.port, "deadbeef-3")  # another server's id: start over
    try:
        assert stale.frames(1)[0][1] == "snapshot"
    finally:
        stale.close()
    # A page of older events, and the routes' bad arguments.
    page = server.get("/api/events?before=20&limit=5").json()
    assert page["first"] == 15 and len(page["events"]) == 5 and page["more"] is True
    for bad in ("before=0", "before=x", "before=5&limit=501", ""):
        reply = server.get(f"/api/events?{bad}")
        assert reply.status == 400 and "error" in reply.json(), bad
    assert server.get("/api/compare?a=run_x&b=run_y").status == 400
    runs = server.get("/api/runs").json()["runs"]
    assert [run["run_id"] for run in runs] == [run_id]


def test_no_secret_reaches_any_page_response(
    home: Path, start_supervisor: Start, http_server: Callable[[], HttpProc]
) -> None:
    sup = _running(start_supervisor)
    run_id = sup.status()["run_id"]
    server = http_server()
    stream = Stream(server.port)
    with Publisher(read_bus_info(home), "generate:planted") as publisher:
        # model_construct skips the model's own redaction, so the raw key really crosses the bus.
        planted = Event.model_construct(**{
            **Event(run_id=run_id, stage="generate", event_type="progress", level="warn").model_dump(),
            "message": f"leaked key {FAKE_KEY}", "error": None, "counters_delta": {"teacher_failed": 1},
        })  # fmt: skip
        publisher.send("event", planted)
    try:
        wait_until(lambda: server.get("/api/snapshot").json()["state"]["counters"]["teacher_failed"] == 1, 15, 0.05,
                   "the planted event in the snapshot")  # fmt: skip
        streamed = stream.raw(1.0)
    finally:
        stream.close()
    assert b"leaked key" in streamed, "the planted event never reached the stream: the check below proves nothing"
    count = sup.call("snapshot")["state"]["event_count"]
    bodies = {
        "stream": streamed,
        "snapshot": server.get("/api/snapshot").body,
        "events": server.get(f"/api/events?before={count + 1}&limit=500").body,
        "runs": server.get("/api/runs").body,
        "page": server.get("/ui").body + server.get("/ui/app.js").body,
    }
    for name, body in bodies.items():
        assert FAKE_KEY.encode() not in body and b"sk-proj" not in body, name
    assert b"leaked key [REDACTED" in bodies["events"]


def test_the_supervisor_run_server_with_control_hands_out_a_private_token(start_supervisor: Start, home: Path) -> None:
    port = free_port_base()
    sup = start_supervisor(config=f'HTTP_ENABLED: "1"\nHTTP_PORT: {port}\nHTTP_CONTROL: "1"\n').wait_ready()
    token_file = home / TOKEN_FILE
    wait_until(token_file.exists, 20, 0.1, f"the token file; supervisor output:\n{sup.output()}")
    token = token_file.read_text().strip()
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600 and len(token) >= 32
    log = (home / "http.log").read_text()
    assert f"http://127.0.0.1:{port}/ui?token={token}" in log
    assert token not in sup.output()  # the daemon's own log says where it is, never what it is
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/ui?token=wrong")
        wrong = conn.getresponse()
        assert wrong.status == 403 and b"wrong control token" in wrong.read() and wrong.getheader("Set-Cookie") is None
        conn.request("GET", f"/ui?token={token}")
        reply = conn.getresponse()
        reply.read()
        assert reply.status == 303 and reply.getheader("Location") == "/ui"
        cookie = reply.getheader("Set-Cookie") or ""
        assert f"autotrain_control_{port}={token}" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
        conn.request("GET", "/metrics")
        assert "autotrain_http_refused_total 1.0" in conn.getresponse().read().decode()
    finally:
        conn.close()
    sup.stop()
    assert not token_file.exists()
