"""The real daemon under a stand-in for systemd: READY, STATUS and WATCHDOG on NOTIFY_SOCKET; the unit file."""

from __future__ import annotations

import configparser
import socket
from collections.abc import Callable
from pathlib import Path

from harness import SupervisorProc

REPO = Path(__file__).resolve().parents[2]


def _messages(sock: socket.socket, until: str, sup: SupervisorProc) -> list[dict[str, str]]:
    got: list[dict[str, str]] = []
    while not any(until in message for message in got):
        try:
            data = sock.recv(4096).decode()
        except TimeoutError:
            raise AssertionError(f"no {until} after {got}; supervisor output: {sup.output()}") from None
        got.append(dict(line.split("=", 1) for line in data.splitlines()))
    return got


def test_the_daemon_notifies_systemd(home: Path, start_supervisor: Callable[..., SupervisorProc]) -> None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(home / "n.sock"))
    sock.settimeout(20)
    try:
        sup = start_supervisor(env={"NOTIFY_SOCKET": str(home / "n.sock"), "WATCHDOG_USEC": "400000"})
        ready = _messages(sock, "READY", sup)[-1]
        assert ready["READY"] == "1" and ready["STATUS"] == "idle: no run yet"
        assert ready["MAINPID"] == str(sup.proc.pid)
        _messages(sock, "WATCHDOG", sup)
        _messages(sock, "WATCHDOG", sup)  # pinged again, from the loop
        assert sup.stop() == 0
        assert _messages(sock, "STOPPING", sup)[-1]["STOPPING"] == "1"
    finally:
        sock.close()


def test_the_unit_file_is_a_notify_user_unit() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(REPO / "docs" / "autotrain-supervisor.service", encoding="utf-8")
    service = unit["Service"]
    assert service["Type"] == "notify" and "WatchdogSec" in service
    assert service["ExecStart"].split()[0].endswith("/autotrain-supervisor")
    assert unit["Install"]["WantedBy"] == "default.target"  # a user unit
