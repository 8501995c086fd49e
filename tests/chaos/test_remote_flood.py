"""Nothing unauthenticated can exhaust the daemon: idle TCP connections by the thousand, no key needed."""

from __future__ import annotations

import contextlib
import os
import resource
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import SupervisorProc, free_port_base, wait_until

IDLE = 1200


@contextlib.contextmanager
def soft_open_files(limit: int) -> Iterator[None]:
    """This process's soft limit on open files set to ``limit`` (what a child started meanwhile inherits)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_idle_connections_beyond_the_soft_open_file_limit_cannot_take_the_daemon_down(home: Path) -> None:
    """1,200 idle TCP connections to a --listen supervisor started with a soft limit of 1,024 open files: it
    stays up, answers locally, says "too many connections" while they are open, and drops and counts them
    once their handshake time is over."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 4096:
        pytest.skip(f"the hard open-file limit is {hard}: no room above a soft limit of 1,024 to raise it to")
    port = free_port_base()
    with soft_open_files(1024):
        sup = SupervisorProc(home, config="ROUNDS: 1\n", args=("--listen", f"127.0.0.1:{port}"))
    conns: list[socket.socket] = []
    try:
        sup.wait_ready()
        with soft_open_files(8192 if hard == resource.RLIM_INFINITY else min(hard, 8192)):
            for i in range(IDLE):
                conns.append(socket.create_connection(("127.0.0.1", port + i % 3), timeout=10))
            fds = wait_until(lambda: len(os.listdir(f"/proc/{sup.proc.pid}/fd")) > 1024 and len(os.listdir(
                f"/proc/{sup.proc.pid}/fd")), 30, 0.2, "the supervisor to hold every connection", sup.evidence)
            status = subprocess.run([sys.executable, "-m", "heidi_engine.ui.menu_cli", "--home", str(home),
                                     "--status", "--json"], capture_output=True, text=True, timeout=60)
            assert status.returncode == 0, (status.stdout, status.stderr, sup.evidence())
            # The health said why while they were open (its log keeps it: they may be gone by now).
            wait_until(lambda: "remote: too many connections: over 512 open" in sup.output(), 10, 0.2,
                       "the health to say why", sup.evidence)

            def closed(conn: socket.socket) -> bool:
                conn.settimeout(0)
                try:
                    while conn.recv(4096):  # the server's greeting, then its end of the connection
                        pass
                except BlockingIOError:
                    return False  # still open
                except ConnectionResetError:
                    pass
                return True

            def dropped() -> bool:  # the daemon closes what never finished a handshake
                return all(closed(conn) for conn in conns)

            wait_until(dropped, 60, 0.5, "every idle connection dropped", sup.evidence)
        counted = wait_until(lambda: sup.status()["bad_messages"].get("remote:bad_handshake", 0) >= IDLE and
                             sup.status(), 20, 0.2, "the dropped connections counted", sup.evidence)
        assert counted["problem"] is None, counted["problem"]
        assert sup.proc.poll() is None and sup.call("ping")["pong"]
        print(f"supervisor held {fds} fds at the peak under a soft limit of 1,024; {IDLE} connections dropped")
    finally:
        for conn in conns:
            conn.close()
        sup.stop()
