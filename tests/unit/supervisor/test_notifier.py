"""sd_notify over a datagram socket this test owns: READY, STATUS, WATCHDOG, STOPPING; journald log form."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from heidi_engine.bus.outage import TeacherOutage
from heidi_engine.bus.state import RunState
from heidi_engine.supervisor.log_output import JournalFormatter, StdioRotatingHandler, rotate_now
from heidi_engine.supervisor.notifier import Notifier, status_line


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = str(tmp_path / "notify.sock")
    sock.bind(path)
    sock.settimeout(5)
    yield sock, path
    sock.close()


def _fields(sock: socket.socket) -> dict[str, str]:
    return dict(line.split("=", 1) for line in sock.recv(4096).decode().splitlines())


def test_ready_status_watchdog_and_stopping(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    now = [100.0]
    notifier = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "10000000"}, clock=lambda: now[0])
    assert notifier.enabled and notifier.watchdog_s == 5.0
    state = RunState()
    notifier.ready(state)
    assert _fields(sock) == {"READY": "1", "MAINPID": str(os.getpid()), "STATUS": "idle: no run yet"}
    notifier.tick(state)
    assert _fields(sock) == {"WATCHDOG": "1"}
    now[0] += 1.0
    state = RunState(run_id="run_20240101_000000_0123abcd", status="running", current_round=1, total_rounds=3,
                     current_stage="train")  # fmt: skip
    notifier.tick(state)  # a new status line, and no ping before half the interval
    assert _fields(sock) == {"STATUS": "run_20240101_000000_0123abcd running · round 1/3 · train"}
    now[0] += 5.0
    notifier.tick(state)
    assert _fields(sock) == {"WATCHDOG": "1"}
    notifier.stopping()
    assert _fields(sock) == {"STOPPING": "1", "STATUS": "shutting down"}


def test_abstract_socket_and_no_socket() -> None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    name = f"autotrain-test-{os.getpid()}"
    sock.bind("\0" + name)
    sock.settimeout(5)
    try:
        assert Notifier({"NOTIFY_SOCKET": "@" + name}).send(STATUS="x")
        assert sock.recv(100) == b"STATUS=x"
    finally:
        sock.close()
    quiet = Notifier({})
    assert not quiet.enabled and not quiet.send(READY="1") and quiet.watchdog_s is None
    # Another process' watchdog (WATCHDOG_PID) is not ours to feed.
    assert Notifier({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "1000", "WATCHDOG_PID": "1"}).watchdog_s is None


def test_a_gone_socket_is_logged_once_not_raised(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone.sock")})
    with caplog.at_level(logging.WARNING):
        assert not notifier.send(READY="1") and not notifier.send(READY="1")
    assert len([r for r in caplog.records if "NOTIFY_SOCKET" in r.getMessage()]) == 1
    assert status_line(RunState(run_id="run_20240101_000000_0123abcd", status="completed")).endswith("completed")


def test_journal_lines_carry_their_priority() -> None:
    record = logging.LogRecord("autotrain", logging.WARNING, __file__, 1, "two\nlines", None, None)
    assert JournalFormatter().format(record) == "<4>autotrain: two\n<4>lines"
    record.levelno = logging.INFO
    assert JournalFormatter().format(record).startswith("<6>")


def test_the_log_file_rotates(tmp_path: Path) -> None:
    path = tmp_path / "supervisor.log"
    path.write_bytes(b"x" * 2000)
    rotate_now(path, max_bytes=1000, backups=2)
    assert not path.exists() and (tmp_path / "supervisor.log.1").stat().st_size == 2000
    handler = StdioRotatingHandler(path, maxBytes=200, backupCount=2, encoding="utf-8")
    saved = os.dup(1), os.dup(2)
    try:
        logger = logging.getLogger("autotrain-rotation-test")
        logger.propagate = False
        logger.addHandler(handler)
        for index in range(20):
            logger.warning("line %d %s", index, "y" * 40)
        os.write(2, b"stray stderr line\n")
    finally:
        handler.close()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["supervisor.log", "supervisor.log.1", "supervisor.log.2"]
    assert "stray stderr line" in path.read_text(encoding="utf-8")  # stderr followed the rotation


def test_the_status_line_says_when_the_teacher_is_unreachable() -> None:
    state = RunState(run_id="run_20240101_000000_0123abcd", status="running", total_rounds=2, current_round=1,
                     current_stage="generate")  # fmt: skip
    assert status_line(state) == "run_20240101_000000_0123abcd running · round 1/2 · generate"
    state.teacher_outage = TeacherOutage(state="parked", since="2024-01-01T00:05:00Z", retry_every_s=30.0)
    assert status_line(state).endswith(" · generate · teacher unreachable since 2024-01-01T00:05:00Z")
