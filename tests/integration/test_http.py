"""The HTTP status server as a real process against a real supervisor: fields, health, errors, load."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from harness import HttpProc, SupervisorProc, agent_env, scripted, wait_until
from prometheus_client.parser import text_string_to_metric_families

from heidi_engine.bus.connection import read_bus_info
from heidi_engine.bus.event import Event
from heidi_engine.bus.publisher import Publisher
from heidi_engine.ui.http.server import StatusServer
from heidi_engine.ui.status_view import ALLOWED_FIELDS
from heidi_engine.ui.viewer import LiveView

REPO = Path(__file__).resolve().parents[2]
SLOW_AGENT = agent_env(scripted("--events", "400", "--delay", "0.05", "--samples"))
FAKE_KEY = "sk-proj-Q3xv9LmT2aZkR8pWc1NbYh4dJf7GsE0u"


def _running(
    home: Path, start_supervisor: Callable[..., SupervisorProc], config: str = "ROUNDS: 1\n"
) -> SupervisorProc:
    sup = start_supervisor(env=SLOW_AGENT, config=config).wait_ready()
    sup.call("start")
    sup.wait_status("running")
    return sup


def test_status_has_exactly_the_allowed_fields_and_no_secret(
    home: Path, start_supervisor: Callable[..., SupervisorProc], http_server: Callable[[], HttpProc]
) -> None:
    sup = _running(home, start_supervisor)
    run_id = sup.status()["run_id"]
    with Publisher(read_bus_info(home), "generate:planted") as publisher:
        # model_construct skips the model's own redaction, so the raw key really crosses the bus.
        planted = Event.model_construct(
            **{
                **Event(run_id=run_id, stage="generate", event_type="progress").model_dump(),
                "message": f"leaked key {FAKE_KEY}",
                "counters_delta": {"teacher_failed": 1},
            }
        )
        publisher.send("event", planted)
    server = http_server()
    wait_until(
        lambda: server.get("/status").json()["counters"]["teacher_failed"] == 1,
        15,
        0.05,  # type: ignore[index]
        "the planted event counted",
    )
    for path in ("/", "/status"):
        reply = server.get(path)
        assert reply.status == 200
        body = reply.json()
        assert tuple(body) == ALLOWED_FIELDS
        assert body["run_id"] == run_id and body["status"] == "running" and body["health"] == "ok"
        assert set(body["gpu_summary"]) == {"vram_used_mb", "vram_total_mb", "util_pct"}  # type: ignore[arg-type]
    for path in ("/", "/status", "/health", "/metrics"):
        text = server.get(path).body.decode()
        assert FAKE_KEY not in text and "sk-proj" not in text


def test_health_down_ok_degraded_and_back(
    home: Path, start_supervisor: Callable[..., SupervisorProc], http_server: Callable[[], HttpProc]
) -> None:
    server = http_server()
    down = server.get("/health")
    assert down.status == 503
    assert down.json()["health"] == "down" and "connection file" in str(down.json()["reason"])
    assert server.get("/status").json()["health"].startswith("down: ")  # the verdict with its reason
    sup = start_supervisor(env=SLOW_AGENT, config="ROUNDS: 1\n").wait_ready()
    wait_until(lambda: server.health() == "ok", 15, 0.05, "health ok")
    assert server.get("/health").status == 200 and server.get("/health").json() == {"health": "ok"}
    os.kill(sup.proc.pid, signal.SIGSTOP)  # alive but silent: the connection file is still there
    try:
        wait_until(lambda: server.health() == "degraded", 15, 0.1, "health degraded")
        degraded = server.get("/health")
        assert degraded.status == 503 and "silent" in str(degraded.json()["reason"])
    finally:
        os.kill(sup.proc.pid, signal.SIGCONT)
    wait_until(lambda: server.health() == "ok", 15, 0.05, "health ok again")
    sup.kill9()  # the connection file stays behind, naming a dead pid
    wait_until(lambda: server.health() == "down", 15, 0.05, "health down")
    assert "gone" in str(server.get("/health").json()["reason"])
    start_supervisor(env=SLOW_AGENT).wait_ready()
    wait_until(lambda: server.health() == "ok", 15, 0.05, "health recovers with a new supervisor")


def test_unknown_paths_404_other_methods_405_and_no_cors(
    home: Path, http_server: Callable[[], HttpProc]
) -> None:
    server = http_server()
    missing = server.get("/status/../../etc/passwd")
    assert missing.status == 404 and missing.json()["error"] == "not found"
    assert server.get("/favicon.ico").status == 404
    for method in ("POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "FOO"):
        reply = server.request(method, "/status")
        assert reply.status == 405, method
        assert reply.headers["allow"] == "GET, HEAD"
    # DNS rebinding: a page from another name that resolves to 127.0.0.1 sends that name as Host.
    for host in ("evil.example", f"evil.example:{server.port}", "127.0.0.1.evil.example", f"localhost:{server.port + 1}"):
        for method in ("GET", "POST"):
            refused = server.request(method, "/status", headers={"Host": host})
            assert refused.status == 421 and b"counters" not in refused.body, (host, method, refused.body)
    for host in ("127.0.0.1", f"127.0.0.1:{server.port}", "localhost", f"LOCALHOST:{server.port}"):
        assert server.request("GET", "/status", headers={"Host": host}).status == 200, host
    for path in ("/status", "/metrics", "/nope"):
        head, get = server.request("HEAD", path), server.get(path)
        assert (head.status, head.body) == (get.status, b""), path
        assert head.headers["content-type"] == get.headers["content-type"], path
    for path in ("/", "/health", "/metrics", "/nope"):
        headers = server.get(path).headers
        assert not any(name.startswith("access-control-") for name in headers), (path, headers)
    assert server.get("/status?verbose=1").status == 200


def test_non_loopback_hosts_are_refused(home: Path) -> None:
    for host in ("0.0.0.0", "192.168.1.10", "::"):
        done = subprocess.run(
            [sys.executable, "-m", "heidi_engine.ui.http", "--home", str(home), "--host", host],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert done.returncode == 2 and "127.0.0.1 only" in done.stderr, (host, done.stderr)
    view = LiveView(home)  # never started: the constructor must refuse before binding
    with pytest.raises(ValueError, match=r"127\.0\.0\.1 only"):
        StatusServer(home, view, host="0.0.0.0")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        busy = subprocess.run(
            [sys.executable, "-m", "heidi_engine.ui.http", "--home", str(home), "--port", port],
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
    assert busy.returncode == 1 and f"cannot listen on 127.0.0.1:{port}" in busy.stderr, busy.stderr
    bad_port = subprocess.run(
        [sys.executable, "-m", "heidi_engine.ui.http", "--home", str(home), "--port", "80"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert bad_port.returncode == 2 and "1024–65535" in bad_port.stderr


def test_200_concurrent_clients_and_a_stalled_one(
    home: Path, start_supervisor: Callable[..., SupervisorProc], http_server: Callable[[], HttpProc]
) -> None:
    _running(home, start_supervisor)
    server = http_server()
    wait_until(lambda: server.health() == "ok", 15, 0.05, "health ok")
    stalled = socket.create_connection(("127.0.0.1", server.port))
    stalled.sendall(b"GET /status HTTP/1.1\r\nHost: x\r\n")  # never finishes its headers
    barrier = threading.Barrier(200)
    results: list[int] = []
    lock = threading.Lock()

    def client() -> None:
        barrier.wait(30)
        try:
            status = server.get("/status").status
        except OSError as exc:
            status = -1
            print("client error:", exc)
        with lock:
            results.append(status)

    threads = [threading.Thread(target=client) for _ in range(200)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    finally:
        stalled.close()
    assert len(results) == 200 and set(results) == {200}, sorted(set(results))


def test_metrics_parse_and_match_the_status(
    home: Path, start_supervisor: Callable[..., SupervisorProc], http_server: Callable[[], HttpProc]
) -> None:
    sup = _running(home, start_supervisor)
    server = http_server()
    wait_until(lambda: server.health() == "ok", 15, 0.05, "health ok")
    wait_until(lambda: sup.status()["counters"]["teacher_generated"] >= 3, 15, 0.05, "progress")
    sup.call("pause")
    status = sup.wait_status("paused")
    reply = server.get("/metrics")
    assert reply.status == 200 and reply.headers["content-type"].startswith("text/plain; version=0.0.4")

    def metrics() -> dict[str, float]:
        text = server.get("/metrics").body.decode()
        return {
            s.name + json.dumps(s.labels, sort_keys=True): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    def paused_with_host_sample() -> dict[str, float] | None:
        m = metrics()
        return (
            m
            if m['autotrain_run_status{"status": "paused"}'] == 1
            and "autotrain_host_cpu_utilization_ratio{}" in m
            else None
        )

    values = wait_until(paused_with_host_sample, 15, 0.05, "metrics show the pause and a host sample")
    assert values["autotrain_up{}"] == 1
    counters = status["counters"]
    assert values['autotrain_teacher_samples_total{"outcome": "generated"}'] == counters["teacher_generated"]
    assert values["autotrain_samples_validated_total{}"] == counters["validated_ok"]
    assert values["autotrain_teacher_requests_total{}"] == status["usage"]["requests_sent"]
    (run_info,) = [name for name in values if name.startswith("autotrain_run_info")]
    assert f'"run_id": "{status["run_id"]}"' in run_info and '"teacher_model": ' in run_info, run_info
    assert values["autotrain_trainer_step{}"] >= 1 and "autotrain_trainer_loss{}" in values
    assert values["autotrain_host_memory_total_bytes{}"] > 2**20
    check = subprocess.run(
        ["promtool", "check", "metrics"], input=reply.body, capture_output=True, timeout=60, check=False
    )
    assert (check.returncode, check.stdout, check.stderr) == (0, b"", b""), (check, reply.body.decode())
    dashboard = json.loads((REPO / "docs" / "grafana-dashboard.json").read_text(encoding="utf-8"))
    queried = set(re.findall(r"\bautotrain_[a-z0-9_]+", json.dumps(dashboard)))
    queried |= set(re.findall(r"\bautotrain_[a-z0-9_]+", (REPO / "docs" / "alerts.yml").read_text(encoding="utf-8")))
    families = list(text_string_to_metric_families(reply.body.decode()))
    exposed = {s.name for family in families for s in family.samples} | {family.name for family in families}
    exposed |= {family.name + "_total" for family in families if family.type == "counter"}
    assert queried and queried <= exposed, sorted(queried - exposed)
    sup.call("resume")
    sup.call("stop")
    sup.wait_status("stopped")
    sup.stop()
    wait_until(lambda: metrics()["autotrain_up{}"] == 0, 15, 0.05, "autotrain_up drops to 0")
