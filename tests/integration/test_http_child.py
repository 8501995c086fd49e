"""The supervisor's HTTP status server child: a failure is reported and reaped, and retried until it works."""

from __future__ import annotations

import json
import socket
import urllib.request
from collections.abc import Callable
from pathlib import Path

from harness import SupervisorProc, pid_alive, wait_until

Start = Callable[..., SupervisorProc]


def test_a_taken_port_is_reported_reaped_and_retried(start_supervisor: Start, home: Path) -> None:
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    port = holder.getsockname()[1]
    sup = start_supervisor(config=f'HTTP_ENABLED: "1"\nHTTP_PORT: {port}\n').wait_ready()
    try:
        down = wait_until(lambda: (http := sup.status()["http"]) and http["error"] and http, 20, 0.1,
                          "the HTTP failure in status")
        assert "exited with exit code 1" in down["error"] and "retrying in" in down["error"], down
        assert "in use" in down["error"].lower(), down
        # The state (what the dashboard and the HTTP API read) carries the problem too.
        snapshot = sup.call("snapshot")["state"]
        assert snapshot["http_error"], snapshot
        # No zombie: every server child the supervisor started and saw fail has been reaped.
        children = [int(p) for p in Path(f"/proc/{sup.proc.pid}/task/{sup.proc.pid}/children").read_text().split()]
        for pid in children:
            stat = Path(f"/proc/{pid}/stat").read_text()
            assert stat.rsplit(")", 1)[-1].split()[0] != "Z", (pid, stat, sup.output())
        assert "HTTP status server on" in sup.output() and "is down" in sup.output()
        # Retried with a back-off that doubles.
        wait_until(lambda: "retrying in 2 s" in sup.output(), 30, 0.1, "a second, later retry")
        assert "retrying in 1 s" in sup.output()
    finally:
        holder.close()
    up = wait_until(lambda: (http := sup.status()["http"]) and http["error"] is None and http["pid"] and http,
                    90, 0.2, "the HTTP server back once the port is free")
    assert pid_alive(up["pid"])

    def answers() -> dict[str, str] | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as reply:
                return dict(json.loads(reply.read()))
        except OSError:
            return None

    assert wait_until(answers, 20, 0.1, "/health answers")["health"] == "ok"
    assert wait_until(lambda: sup.call("snapshot")["state"]["http_error"] is None, 10, 0.1, "http_error cleared")
