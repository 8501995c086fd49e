"""A client file is a role, not the keys to the server: what each role may do over loopback CURVE, what an
issued key is worth on the local endpoints, and what a revocation costs the clients that remain.

One supervisor for the module, started with ``--listen`` and a plain ``--tcp-port``: its own teacher is a
loopback fake, and an "attacker's" fake teacher stands by to show that no refused start ever reaches it
(and that an admin's does, which is why admin is asked for explicitly). Only 127.0.0.1 is ever used.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import zmq
from fakes.openai_server import FakeOpenAIServer
from harness import SupervisorProc, agent_env, free_port_base, scripted, short_home, wait_until

from heidi_engine.bus.clients import issue_client, revoke_client
from heidi_engine.bus.codec import decode, encode
from heidi_engine.bus.connection import BusInfo, read_client_file
from heidi_engine.bus.control import ControlClient
from heidi_engine.bus.errors import ControlTimeout
from heidi_engine.bus.event import Event
from heidi_engine.bus.message import Command, Reply
from heidi_engine.bus.publisher import Publisher
from heidi_engine.bus.remote import connect

DAEMON_KEY = "sk-daemon-own-key-0123456789abcdef"
# A start naming any of these is refused for an operator: each says where code runs, where a secret goes
# or how much may be spent.
FORBIDDEN: dict[str, object] = {
    "TEACHER_MODEL": "gpt-4o-mini", "TEACHER_API_KEY_ENV": "AWS_SECRET_ACCESS_KEY", "BASE_MODEL": "evil/model",
    "SANDBOX": "none", "RUN_UNIT_TESTS": "1", "TASK_SOURCE": "file:/etc/tasks.jsonl", "REPORT_TO": "wandb",
    "HTTP_PORT": 8080, "HTTP_ENABLED": "1", "MAX_COST_USD": 1000.0, "EVENT_LOG_RETENTION": 99, "STOP_GRACE_S": 600.0,
}  # fmt: skip
EVENTS = 20_000


@dataclass
class Served:
    sup: SupervisorProc
    own: FakeOpenAIServer
    attacker: FakeOpenAIServer
    listen: str
    tcp_port: int

    def issue(self, name: str, role: str) -> tuple[Path, BusInfo]:
        path = self.sup.home / f"{name}.bus.json"
        return path, issue_client(self.sup.home, name, self.listen, path, role)

    def counted(self, key: str) -> int:
        return int(self.sup.status()["bad_messages"].get(key, 0))

    def stop_run(self) -> None:
        if self.sup.status()["status"] in ("starting", "running", "paused", "stopping"):
            if not self.sup.status()["stop_requested"]:
                self.sup.call("stop")
            self.sup.wait_status("stopped", "completed", "failed", timeout_s=60)


def _config(teacher: str) -> str:
    values = {"ROUNDS": 1, "SAMPLES_PER_ROUND": 2, "TEACHER_MODEL": "teacher-own", "TEACHER_BASE_URL": teacher,
              "RUN_UNIT_TESTS": "0", "TEACHER_MAX_RETRIES": 0}  # fmt: skip
    return "".join(f"{key}: {json.dumps(value)}\n" for key, value in values.items())


def _env() -> dict[str, str]:
    # The real generate agent talks to the teacher; training is a slow script, so a run stays active.
    slow = scripted("--events", "100000", "--delay", "0.05", "--counter", "train_step")
    return {**agent_env(scripted("--events", "0"), generate="", train=slow), "OPENAI_API_KEY": DAEMON_KEY}


def _start(home: Path, own: FakeOpenAIServer) -> tuple[SupervisorProc, str, int]:
    listen, tcp = f"127.0.0.1:{free_port_base()}", free_port_base()
    sup = SupervisorProc(home, env=_env(), config=_config(own.url), args=("--listen", listen, "--tcp-port", str(tcp)))
    return sup.wait_ready(), listen, tcp


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    with short_home() as home, FakeOpenAIServer() as own, FakeOpenAIServer() as attacker:
        sup, listen, tcp = _start(home, own)
        try:
            yield Served(sup, own, attacker, listen, tcp)
        finally:
            sup.stop()


def _menu(bus_file: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "heidi_engine.ui.menu_cli", "--bus", str(bus_file), *args],
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip


def _refused(client: ControlClient, name: str, args: dict[str, Any] | None = None) -> str:
    reply = client.request(name, args)
    assert not reply.ok, f"{name} {args} was allowed: {reply.result}"
    return str(reply.error)


def test_an_operator_starts_runs_with_the_servers_configuration_sizing_only_the_work(served: Served) -> None:
    bus_file, info = served.issue("ops", "operator")
    who = "not allowed for client ops (role operator)"
    # The menu's own --start, as the attack was tried: the teacher URL is the field it names.
    done = _menu(bus_file, "--start", "--set", f"TEACHER_BASE_URL={served.attacker.url}", "--set",
                 "TEACHER_MODEL=gpt-4o-mini")  # fmt: skip
    assert done.returncode != 0 and "TEACHER_BASE_URL" in done.stderr and who in done.stderr, done.stdout + done.stderr
    with ControlClient(info, timeout_s=10) as ops:
        for field, value in FORBIDDEN.items():
            said = _refused(ops, "start", {"overrides": {"ROUNDS": 1, field: value}})
            assert f"overriding {field} is {who}" in said, said
        assert served.sup.status()["status"] not in ("starting", "running"), "a refused start started a run"
        assert served.counted("control:not_allowed") >= len(FORBIDDEN) + 1
        assert who in _refused(ops, "shutdown")
        # What it may do: start with the server's configuration, sizing the work; pause; resume; stop.
        run_id = ops.call("start", {"overrides": {"ROUNDS": 1, "SAMPLES_PER_ROUND": 2, "SEED": 7}})["run_id"]
        wait_until(lambda: served.sup.status()["current_stage"] == "train", 60, 0.1, "the run to reach training",
                   served.sup.evidence)  # fmt: skip
        assert ops.call("pause")["run_id"] == run_id
        served.sup.wait_status("paused")
        ops.call("resume")
        served.sup.wait_status("running")
        ops.call("stop")
        served.sup.wait_status("stopped", timeout_s=60)
    # The server's own teacher, with the daemon's key, answered the run; the attacker's heard nothing.
    assert served.own.requests and all(r.headers.get("authorization") == f"Bearer {DAEMON_KEY}" for r in served.own.requests)
    assert served.attacker.requests == [], [r.path for r in served.attacker.requests]
    assert served.sup.proc.poll() is None


def test_a_viewer_watches_and_can_neither_steer_nor_publish(served: Served) -> None:
    _, info = served.issue("eye", "viewer")
    who = "not allowed for client eye (role viewer)"
    with ControlClient(info, timeout_s=10) as eye:
        assert eye.call("status")["session"] == served.sup.status()["session"]
        assert "state" in eye.call("snapshot") and isinstance(eye.call("list_runs"), list)
        for name in ("pause", "resume", "stop", "start", "resume_run", "shutdown"):
            assert who in _refused(eye, name), name
    before = served.counted("ingress:not_allowed")
    push = zmq.Context.instance().socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 1000)
    connect(push, info, info.ingress)
    event = Event(run_id="run_20260101_000000_00000000", round=1, stage="train", event_type="progress", message="x")
    push.send_multipart(encode(info.key, "event", event, sender="eye", session="s"))
    push.close()
    wait_until(lambda: served.counted("ingress:not_allowed") > before, 10, 0.05, "the viewer's event refused",
               served.sup.evidence)  # fmt: skip


def _curve(info: BusInfo, kind: int, endpoint: str) -> zmq.Socket[bytes]:
    sock = zmq.Context.instance().socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    connect(sock, info, endpoint)
    return sock


def _answer(sock: zmq.Socket[bytes], key: bytes, timeout_ms: int) -> Reply | None:
    if not sock.poll(timeout_ms):
        return None
    body = decode(sock.recv_multipart(), key).body
    assert isinstance(body, Reply)
    return body


def test_an_issued_key_is_worthless_locally_and_once_revoked_everywhere(served: Served) -> None:
    _, info = served.issue("gone", "admin")
    local = BusInfo(**{**info.__dict__, "server_key": "", "public_key": "", "secret_key": "",
                       "control": f"tcp://127.0.0.1:{served.tcp_port + 2}"})  # fmt: skip
    status = encode(info.key, "command", Command(id="a1", name="status"), sender="gone", session="s1")
    curve = _curve(info, zmq.DEALER, info.control)
    plain = _curve(local, zmq.DEALER, local.control)
    try:
        # The plain local endpoint takes nothing the client's key signed, even before any revocation.
        forged = served.counted("control:bad_signature")
        plain.send_multipart(status)
        wait_until(lambda: served.counted("control:bad_signature") > forged, 10, 0.05, "the forged command counted")
        assert _answer(plain, info.key, 500) is None
        # Over CURVE it is answered once; the same frames again are a replay.
        curve.send_multipart(status)
        first = _answer(curve, info.key, 10_000)
        assert first is not None and first.ok, first
        curve.send_multipart(status)
        again = _answer(curve, info.key, 10_000)
        assert again is not None and not again.ok and again.error == "command refused: replayed", again
        assert served.counted("control:replayed") >= 1
        revoke_client(served.sup.home, "gone")
        revoked = served.counted("remote:revoked")

        def dropped() -> bool:  # on the connection it opened before: within a second, nothing answered
            fresh = encode(info.key, "command", Command(id=f"b{revoked}", name="status"), sender="gone", session="s2")
            curve.send_multipart(fresh)
            return _answer(curve, info.key, 300) is None and served.counted("remote:revoked") > revoked

        wait_until(dropped, 15, 0.0, "the revoked key's commands dropped", served.sup.evidence)
        unauthorized = served.counted("remote:unauthorized")
        # A new connection is refused at the handshake.
        with ControlClient(info, timeout_s=1) as again_client, pytest.raises(ControlTimeout, match="no reply"):
            again_client.call("status")
        assert served.counted("remote:unauthorized") > unauthorized
        forged = served.counted("control:bad_signature")
        plain.send_multipart(encode(info.key, "command", Command(id="c1", name="shutdown"), sender="g", session="s3"))
        wait_until(lambda: served.counted("control:bad_signature") > forged, 10, 0.05, "the forged command counted")
        assert _answer(plain, info.key, 500) is None
    finally:
        curve.close(linger=0)
        plain.close(linger=0)
    assert served.sup.proc.poll() is None


def test_revocations_lose_no_event_of_the_clients_that_remain(served: Served) -> None:
    _, feeder = served.issue("feeder", "operator")
    run_id = served.sup.call("start")["run_id"]
    wait_until(lambda: served.sup.status()["current_stage"] == "train", 60, 0.1, "the run to reach training",
               served.sup.evidence)  # fmt: skip
    before = served.sup.status()["counters"].get("eval_total", 0)
    churned: list[str] = []
    failures: list[BaseException] = []

    def churn() -> None:  # five other clients, each connected (so that its revocation cuts), then revoked
        try:
            for i in range(5):
                name = f"churn{i}"
                _, info = served.issue(name, "viewer")
                sub = _curve(info, zmq.SUB, info.egress)
                sub.setsockopt(zmq.SUBSCRIBE, b"")
                with ControlClient(info, timeout_s=10) as other:
                    other.call("ping")
                    wait_until(lambda s=sub: s.poll(100), 15, 0.0, f"{name}'s subscriber hears the supervisor")
                    revoke_client(served.sup.home, name)
                    wait_until(lambda: not _admitted(other), 15, 0.05, f"{name} cut off")
                sub.close(linger=0)
                churned.append(name)
        except BaseException as exc:  # reported by the test, not lost in the thread
            failures.append(exc)

    thread = threading.Thread(target=churn)
    with Publisher(feeder, sender="train:remote") as publisher:
        thread.start()
        for i in range(EVENTS):
            publisher.send("event", Event(run_id=run_id, round=1, stage="train", event_type="progress",
                                          message=f"remote {i}", counters_delta={"eval_total": 1}))  # fmt: skip
        thread.join(120)
    assert not failures, failures
    assert churned == [f"churn{i}" for i in range(5)]
    assert publisher.undelivered == 0
    counted = wait_until(lambda: (served.sup.status()["counters"].get("eval_total", 0) - before == EVENTS) or None,
                         30, 0.1, f"{EVENTS} remote events counted", served.sup.evidence)  # fmt: skip
    assert counted
    print(f"{EVENTS} events from a remote client while 5 others were issued and revoked: all counted, "
          f"{publisher.resent} message(s) sent again")
    assert publisher.resent == 0, "a revocation dropped messages that had to be sent again"
    served.stop_run()


def _admitted(client: ControlClient) -> bool:
    try:
        client.call("ping", timeout_s=0.3)
    except Exception:
        return False
    return True


def test_an_admin_may_point_the_teacher_anywhere_and_shut_the_daemon_down() -> None:
    """What the operator is refused is exactly what makes admin dangerous: the daemon's key goes where told."""
    with short_home() as home, FakeOpenAIServer() as own, FakeOpenAIServer() as attacker:
        sup, listen, _ = _start(home, own)
        try:
            bus_file = home / "root.bus.json"
            issue_client(home, "root", listen, bus_file, "admin")
            with ControlClient(read_client_file(bus_file), timeout_s=10) as admin:
                admin.call("start", {"overrides": {"TEACHER_BASE_URL": attacker.url}})
                wait_until(lambda: attacker.requests, 60, 0.1, "the admin's teacher asked", sup.evidence)
                assert attacker.requests[0].headers.get("authorization") == f"Bearer {DAEMON_KEY}"
                admin.call("stop")
                sup.wait_status("stopped", timeout_s=60)
            # An operator may not continue it: the run would send the daemon's key where the admin said.
            operator = issue_client(home, "ops", listen, home / "ops.bus.json", "operator")
            with ControlClient(operator, timeout_s=10) as ops:
                said = _refused(ops, "resume_run")
            assert "resuming that run is not allowed for client ops (role operator)" in said, said
            assert "TEACHER_BASE_URL" in said and sup.status()["status"] == "stopped"
            done = _menu(bus_file, "--shutdown")
            assert done.returncode == 0, done.stdout + done.stderr
            assert sup.proc.wait(30) == 0, sup.evidence()
        finally:
            sup.stop()
