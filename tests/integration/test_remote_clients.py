"""Remote clients over loopback TCP with CURVE: one supervisor for the module, started with ``--listen``.

A dashboard, a menu and a user's own HF training script run as another user, holding only the client
connection file (the home is root's, 0700). Clients with an unknown, a revoked or no key at all get
nothing, and what they send counts for nothing. Only 127.0.0.1 is ever used.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import secrets
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest
import zmq
from harness import USER_TRAIN_SCRIPT as TRAIN_SCRIPT
from harness import SupervisorProc, agent_env, free_port_base, scripted, short_home, wait_until

from heidi_engine.bus.codec import encode
from heidi_engine.bus.connection import BUS_ENV, BusInfo, read_bus_info, read_client_file
from heidi_engine.bus.control import ControlClient
from heidi_engine.bus.errors import BusError
from heidi_engine.bus.event import Event
from heidi_engine.bus.journal import read_events, read_samples
from heidi_engine.bus.message import Command
from heidi_engine.bus.state import TrainerSample

SUPERVISOR = [sys.executable, "-m", "heidi_engine.supervisor.cli"]
STEPS = 3


@contextlib.contextmanager
def _traversable(path: str) -> Iterator[None]:
    """Let other users traverse every folder above ``path`` (our interpreter may live under a 0700 /root);
    each mode is restored afterwards."""
    changed: list[tuple[str, int]] = []
    folder = os.path.dirname(os.path.realpath(path))
    try:
        while True:
            mode = stat.S_IMODE(os.stat(folder).st_mode)
            if not mode & stat.S_IXOTH:
                os.chmod(folder, mode | stat.S_IXOTH)
                changed.append((folder, mode))
            if folder == "/":
                break
            folder = os.path.dirname(folder)
        yield
    finally:
        for folder, mode in changed:
            os.chmod(folder, mode)


@dataclass
class Remote:
    """The module's live run and the other user who watches and steers it."""

    sup: SupervisorProc
    run_id: str
    uid: int
    user_home: str
    work: Path
    bus_file: Path

    def as_user(self, *args: str, extra_env: dict[str, str] | None = None, timeout: float = 120,
                cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": self.user_home, "OMP_NUM_THREADS": "1",
               **(extra_env or {})}  # fmt: skip
        return subprocess.run(
            [sys.executable, *args], user=self.uid, group=self.uid, extra_groups=[], env=env,
            cwd=cwd or self.work, capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip

    def status(self) -> dict[str, Any]:
        return self.sup.status()


def issue(home: Path, name: str, output: Path) -> BusInfo:
    done = subprocess.run([*SUPERVISOR, "--home", str(home), "--issue-client", name, "--output", str(output)],
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert stat.S_IMODE(output.stat().st_mode) == 0o600
    return read_client_file(output)


def revoke(home: Path, name: str) -> None:
    done = subprocess.run([*SUPERVISOR, "--home", str(home), "--revoke-client", name],
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture(scope="module")
def remote() -> Iterator[Remote]:
    if os.geteuid() != 0 or shutil.which("useradd") is None:
        pytest.skip("needs root and useradd to run clients as another user")
    name = f"heidi-rem-{secrets.token_hex(3)}"
    made = subprocess.run(["useradd", "--create-home", "--shell", "/bin/sh", name],
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert made.returncode == 0, made.stderr
    entry = pwd.getpwnam(name)
    sup: SupervisorProc | None = None
    try:
        with short_home() as home, _traversable(sys.executable), tempfile.TemporaryDirectory() as work_dir:
            work = Path(work_dir)
            os.chmod(work, 0o755)
            port = free_port_base()
            slow = scripted("--events", "100000", "--delay", "0.05")
            sup = SupervisorProc(home, env=agent_env(slow), args=("--listen", f"127.0.0.1:{port}")).wait_ready()
            run_id = sup.call("start")["run_id"]
            sup.wait_status("running")
            user_work = work / "user"
            user_work.mkdir()
            bus_file = user_work / "laptop.bus.json"
            issue(home, "laptop", bus_file)
            for path in (user_work, bus_file):
                os.chown(path, entry.pw_uid, entry.pw_gid)
            yield Remote(sup, run_id, entry.pw_uid, entry.pw_dir, user_work, bus_file)
            sup.stop()
    finally:
        if sup is not None:
            sup.stop()
        for proc in psutil.process_iter(["uids"]):  # nothing of the user may survive; kill before userdel
            if proc.info["uids"] is not None and proc.info["uids"].real == entry.pw_uid:
                with contextlib.suppress(psutil.Error):
                    proc.kill()
        gone = subprocess.run(["userdel", "--remove", name], capture_output=True, text=True, check=False)
        assert gone.returncode == 0, gone.stderr


def test_another_user_with_only_the_client_file_follows_and_steers_the_run(remote: Remote) -> None:
    assert remote.as_user("-c", f"import os; os.listdir({str(remote.sup.home)!r})").returncode != 0, \
        "the other user must not be able to read the home"
    bus = str(remote.bus_file)
    dash = remote.as_user("-m", "heidi_engine.ui.dash_cli", "--bus", bus, "--once", "--view", "1")
    assert dash.returncode == 0, dash.stdout + dash.stderr + remote.sup.evidence()
    assert remote.run_id in dash.stdout, dash.stdout
    status = remote.as_user("-m", "heidi_engine.ui.menu_cli", "--bus", bus, "--status", "--json")
    assert status.returncode == 0, status.stdout + status.stderr
    assert json.loads(status.stdout)["run_id"] == remote.run_id
    paused = remote.as_user("-m", "heidi_engine.ui.menu_cli", "--pause", extra_env={BUS_ENV: bus})
    assert paused.returncode == 0, paused.stdout + paused.stderr
    remote.sup.wait_status("paused")
    resumed = remote.as_user("-m", "heidi_engine.ui.menu_cli", "--bus", bus, "--resume")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    remote.sup.wait_status("running")
    assert not remote.status()["pause_requested"]


def test_another_users_training_script_reports_into_the_run(remote: Remote) -> None:
    (remote.work / "train.py").write_text(TRAIN_SCRIPT)
    done = remote.as_user(str(remote.work / "train.py"), str(remote.work / "out"), str(STEPS),
                          extra_env={BUS_ENV: str(remote.bus_file)}, timeout=240)  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "not reported" not in done.stderr, done.stderr[-3000:]
    run_dir = remote.sup.home / "runs" / remote.run_id

    def steps() -> list[int]:
        return [s.step for s in read_samples(run_dir) if isinstance(s, TrainerSample)]

    wait_until(lambda: len(steps()) >= STEPS, 15, 0.05, "the script's samples in metrics.jsonl", remote.sup.evidence)
    assert steps() == list(range(1, STEPS + 1))


def _raw(kind: int, endpoint: str, keys: tuple[bytes, bytes, bytes] | None) -> zmq.Socket[bytes]:
    """A bare pyzmq socket: a CURVE client with (server, public, secret) keys, else plaintext."""
    sock = zmq.Context.instance().socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    if keys is not None:
        sock.setsockopt(zmq.CURVE_SERVERKEY, keys[0])
        sock.setsockopt(zmq.CURVE_PUBLICKEY, keys[1])
        sock.setsockopt(zmq.CURVE_SECRETKEY, keys[2])
    if kind == zmq.SUB:
        sock.setsockopt(zmq.SUBSCRIBE, b"")
    if kind == zmq.PUSH:
        sock.setsockopt(zmq.SNDTIMEO, 0)
    sock.connect(endpoint)
    return sock


def _refused(remote: Remote, reason: str) -> int:
    return int(remote.status()["bad_messages"].get(f"remote:{reason}", 0))


def _intruder_gets_nothing(remote: Remote, info: BusInfo, keys: tuple[bytes, bytes, bytes] | None, reason: str) -> None:
    """Subscribe, command and publish with ``keys``: no message, no reply, nothing counted; refusals counted."""
    before = _refused(remote, reason)
    generated_before = remote.status()["counters"].get("teacher_generated", 0)
    sub = _raw(zmq.SUB, info.egress, keys)
    dealer = _raw(zmq.DEALER, info.control, keys)
    push = _raw(zmq.PUSH, info.ingress, keys)
    marker = f"intruder-{secrets.token_hex(4)}"
    event = Event(run_id=remote.run_id, round=1, stage="generate", event_type="progress", message=marker,
                  counters_delta={"teacher_generated": 1000})  # fmt: skip
    try:
        with contextlib.suppress(zmq.Again):  # a PUSH with no admitted peer cannot even queue it
            push.send_multipart(encode(info.key, "event", event, sender="generate:1", session="x"))
        dealer.send_multipart(encode(info.key, "command", Command(id="1", name="status"), sender="x", session="x"),
                              flags=zmq.NOBLOCK)  # fmt: skip
        # Refusals are counted within a second; heartbeats (one a second) would have reached a member.
        wait_until(lambda: _refused(remote, reason) > before, 10, 0.05, f"remote:{reason} counted",
                   remote.sup.evidence)  # fmt: skip
        heard = remote.status()["seq"]
        wait_until(lambda: remote.status()["seq"] >= heard + 2, 10, 0.05, "two more egress messages")
        assert not sub.poll(0), "an unauthorized subscriber received a message"
        assert not dealer.poll(0), "an unauthorized client got a reply"
    finally:
        for sock in (sub, dealer, push):
            sock.close(linger=0)
    run_dir = remote.sup.home / "runs" / remote.run_id
    assert all(marker not in e.message for e in read_events(run_dir))
    # The agent adds one per event (20 a second); the intruder's event alone would have added 1,000.
    assert remote.status()["counters"].get("teacher_generated", 0) - generated_before < 1000


def _file_keys(info: BusInfo) -> tuple[bytes, bytes, bytes]:
    return info.server_key.encode(), info.public_key.encode(), info.secret_key.encode()


def test_a_client_with_an_unknown_key_gets_nothing_and_is_counted(remote: Remote) -> None:
    info = read_client_file(remote.bus_file)
    public, secret = zmq.curve_keypair()
    _intruder_gets_nothing(remote, info, (info.server_key.encode(), public, secret), "unauthorized")


def test_a_plaintext_client_against_the_curve_port_gets_nothing(remote: Remote) -> None:
    _intruder_gets_nothing(remote, read_client_file(remote.bus_file), None, "bad_handshake")


def _drain(sock: zmq.Socket[bytes]) -> int:
    count = 0
    while sock.poll(0):
        sock.recv_multipart()
        count += 1
    return count


def test_a_revoked_client_is_cut_off_without_a_restart(remote: Remote) -> None:
    home = remote.sup.home
    doomed = issue(home, "doomed", remote.work / "doomed.bus.json")
    sub = _raw(zmq.SUB, doomed.egress, _file_keys(doomed))
    client = ControlClient(doomed, timeout_s=5)
    # The home's own ipc endpoints never took the client's key, and do not now.
    local = read_bus_info(home)
    ipc = _raw(zmq.DEALER, local.control, None)
    try:
        wait_until(lambda: sub.poll(100), 20, 0.0, "the client's subscriber hears the run", remote.sup.evidence)
        assert client.call("ping")
        revoked = _refused(remote, "revoked")
        revoke(home, "doomed")

        def cut_off() -> bool:
            try:
                client.call("ping", timeout_s=0.5)
            except BusError:
                # A slow reply on a loaded machine is no proof: the cut is when the supervisor drops what the
                # revoked key sends on the connection it already has.
                return _refused(remote, "revoked") > revoked
            return False

        wait_until(cut_off, 15, 0.0, "the revoked client's commands to go unanswered", remote.sup.evidence)
        _drain(sub)  # what arrived before the cut (a failed ping takes half a second); after it, nothing
        seq = remote.status()["seq"]
        wait_until(lambda: remote.status()["seq"] >= seq + 2, 10, 0.05, "two more egress messages")
        assert _drain(sub) == 0, "the revoked subscriber still receives"
        forged = int(remote.status()["bad_messages"].get("control:bad_signature", 0))
        ipc.send_multipart(encode(doomed.key, "command", Command(id="x", name="status"), sender="d", session="d"))
        wait_until(lambda: remote.status()["bad_messages"].get("control:bad_signature", 0) > forged, 10, 0.05,
                   "the client's key refused on the ipc endpoint")  # fmt: skip
        assert not ipc.poll(200), "the ipc endpoint answered a command signed with a client's key"
        assert remote.sup.proc.poll() is None
        # An authorized client was never dropped: its commands are answered throughout.
        with ControlClient(read_client_file(remote.bus_file), timeout_s=10) as member:
            assert member.call("ping")
    finally:
        sub.close(linger=0)
        ipc.close(linger=0)
        client.close()
    listed = subprocess.run([*SUPERVISOR, "--home", str(home), "--list-clients"],
                            capture_output=True, text=True, timeout=60, check=True).stdout.split()  # fmt: skip
    assert listed == ["laptop", "operator"]
