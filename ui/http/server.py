"""The HTTP status server: a bus client like any viewer, on 127.0.0.1 only.

``python -m heidi_engine.ui.http.server --home H [--port N]``. Routes: ``GET /`` and ``GET /status`` (the allowed
fields), ``GET /health`` (200 ok, else 503 with the reason), ``GET /metrics`` (Prometheus text, see
:mod:`heidi_engine.ui.http.metrics`), and the browser page with its data (``/ui``, ``/api/...``, see
:mod:`heidi_engine.ui.http.page_routes`; a browser asking ``/`` for HTML is sent to ``/ui``). HEAD answers
like GET without the body. Anything else is 404; another method is 405 with ``Allow: GET, HEAD`` (but for
the page's control routes, which take ``POST``). No CORS header at all, and a ``Host`` other than
``127.0.0.1`` or ``localhost`` (with this server's port, or none) is 421: a page a browser loaded from
another name that resolves here (DNS rebinding) cannot read the status.

Requests never touch the bus: a :class:`LiveView` thread keeps the state current and each request reads
its latest frozen snapshot, so a hung supervisor cannot hang a client, and one slow client cannot hold
up the others (a thread per connection, daemon threads, a socket timeout).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from dataclasses import replace
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any

from heidi_engine.bus.config import ConfigError, load_config
from heidi_engine.bus.exit_status import EXIT_BAD_USAGE, EXIT_FAILURE, EXIT_OK
from heidi_engine.bus.options import HomeError, add_home_option, command_parser, open_home, resolve_home
from heidi_engine.ui.connect import NoSupervisor, local_supervisor
from heidi_engine.ui.http.control import ControlGate, allowed_hosts
from heidi_engine.ui.http.metrics import CONTENT_TYPE, exposition
from heidi_engine.ui.http.page_routes import PageRoutes
from heidi_engine.ui.http.stream import PageFeed
from heidi_engine.ui.status_view import Health, assess, orphaned, status_fields
from heidi_engine.ui.viewer import LiveView, View

__all__ = ["LOOPBACK", "StatusServer", "main", "route", "serve"]

LOOPBACK = "127.0.0.1"
_JSON = "application/json"
_CLIENT_TIMEOUT_S = 10.0


class StatusServer(ThreadingHTTPServer):
    """A threading HTTP server over one :class:`LiveView`; refuses any host but 127.0.0.1."""

    daemon_threads = True
    # The socketserver default backlog (5) makes a burst of clients wait for SYN retries.
    request_queue_size = 256

    def __init__(
        self, home: Path, view: LiveView, *, host: str = LOOPBACK, port: int = 0, control: bool = False
    ) -> None:
        if host != LOOPBACK:
            raise ValueError(f"the status server listens on {LOOPBACK} only, not {host!r}")
        self.home = home
        self.view = view
        # Before the bind: a server that cannot bind closes itself (server_close) before __init__ returns.
        self.feed = PageFeed(view, self.health, config_file=home / "config.yaml")
        super().__init__((host, port), _Handler)
        port = self.server_address[1]
        self.gate = ControlGate.with_new_token(port) if control else ControlGate(None, port)
        self.page = PageRoutes(home, self.feed, self.gate, lambda: self.view.latest().state.run_id)
        self.feed.start()

    def server_close(self) -> None:
        self.feed.close()
        super().server_close()

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://{LOOPBACK}:{self.server_address[1]}"

    def health(self) -> Health:
        """The current verdict: the live view, plus the connection file when the view is not connected."""
        latest = self.view.latest()
        # The file is checked even while the view looks connected: a supervisor that shut down cleanly
        # has removed it, which tells "down" at once instead of after the 3 s of silence.
        try:
            local_supervisor(self.home)
        except NoSupervisor as exc:
            return assess(latest, str(exc))
        return assess(latest, None)

    def snapshot(self) -> tuple[View, Health]:
        """The latest view and the health verdict, together (what /status and one /metrics scrape report).

        Once the supervisor's process is known gone, the run it left active is shown ``interrupted``."""
        latest, health = self.view.latest(), self.health()
        if health.state == "down":
            latest = replace(latest, state=orphaned(latest.state))
        return latest, health


def route(target: str) -> str:
    """The route a request target names: no query or fragment, no trailing slash (``/status/`` is
    ``/status``, as most servers treat it)."""
    path = target.split("?", 1)[0].split("#", 1)[0]
    return path.rstrip("/") or "/"


class _Handler(BaseHTTPRequestHandler):
    server: StatusServer
    server_version = "autotrain-status"
    sys_version = ""
    timeout = _CLIENT_TIMEOUT_S

    def version_string(self) -> str:
        return self.server_version

    def __getattr__(self, name: str) -> Any:
        # Every method but GET and HEAD, known or not (``FOO /``): 405, not the library's 501.
        if name.startswith("do_"):
            return self._not_allowed
        raise AttributeError(name)

    def _host_allowed(self) -> bool:
        host = self.headers.get("Host")
        if host is None:  # an HTTP/1.0 client names none; only a browser's request matters here
            return True
        port = self.server.server_address[1]
        if host.strip().lower() in allowed_hosts(port):
            return True
        self._json(HTTPStatus.MISDIRECTED_REQUEST, {"error": f"this server answers for {LOOPBACK}:{port} only"})
        return False

    def do_GET(self) -> None:
        if not self._host_allowed():
            return
        path = route(self.path)
        if path == "/" and "text/html" in self.headers.get("Accept", ""):
            self._send(HTTPStatus.SEE_OTHER, _JSON, b"", {"Location": "/ui"})  # a browser: the page
        elif path in ("/", "/status"):
            latest, health = self.server.snapshot()
            self._json(HTTPStatus.OK, status_fields(latest.state, health))
        elif path == "/health":
            health = self.server.health()
            self._json(HTTPStatus(health.http_status), health.body())
        elif path == "/metrics":
            self._send(HTTPStatus.OK, CONTENT_TYPE, exposition(self.server.snapshot, self.server.gate.refused))
        elif not self.server.page.get(self, path):
            self._json(
                HTTPStatus.NOT_FOUND,
                {"error": "not found", "routes": ["/", "/status", "/health", "/metrics", "/ui", "/api/snapshot",
                                                  "/api/stream", "/api/events", "/api/runs", "/api/compare"]},
            )

    def do_POST(self) -> None:
        # The Host is judged by the control gate (403 and counted), not answered 421 like a read.
        if not self.server.page.post(self, route(self.path)):
            self._not_allowed()

    def _not_allowed(self) -> None:
        if not self._host_allowed():
            return
        self._json(
            HTTPStatus.METHOD_NOT_ALLOWED,
            {"error": f"method {self.command} not allowed; use GET or HEAD"},
            extra={"Allow": "GET, HEAD"},
        )

    do_HEAD = do_GET  # the same status and headers, no body (``_send`` writes none for HEAD)

    def _json(self, status: HTTPStatus, body: dict[str, Any], extra: dict[str, str] | None = None) -> None:
        self._send(status, _JSON, json.dumps(body, allow_nan=False).encode(), extra)

    def _send(
        self, status: HTTPStatus, content_type: str, payload: bytes, extra: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        # Access logs would interleave with the URL line scripts read; errors still reach stderr.
        return


def _port(home: Path, given: int | None, control: bool) -> tuple[int, bool]:
    """``--port``, else HTTP_PORT from config (file and environment), and whether to allow control
    (``--control``, else HTTP_CONTROL); ConfigError when invalid."""
    if given is not None and given != 0 and not 1024 <= given <= 65535:
        raise ConfigError([f"--port = {given}: expected 1024–65535 (or 0 for any free port)"])
    if given is not None and control:
        return given, True
    path = home / "config.yaml"
    config = load_config(path if path.exists() else None)
    return (config.HTTP_PORT if given is None else given), control or config.HTTP_CONTROL == "1"


def serve(home: Path, *, host: str = LOOPBACK, port: int = 0, announce: bool = True, control: bool = False) -> int:
    """Run the server in the foreground until SIGTERM/SIGINT; the exit code (0, or 1 if it cannot bind).

    With ``control`` the page may pause, resume and stop the run: the URL that hands a browser the token
    is printed (before the ``serving`` line) and written to ``http_control.token`` (0600) for as long as
    the server runs."""
    view = LiveView(home, sender="http").start()
    try:
        try:
            server = StatusServer(home, view, host=host, port=port, control=control)
        except OSError as exc:
            print(f"HTTP status server: cannot listen on {host}:{port}: {exc.strerror or exc}", file=sys.stderr)
            return EXIT_FAILURE

        def _stop(signum: int, _frame: FrameType | None) -> None:
            raise KeyboardInterrupt

        signal.signal(signal.SIGTERM, _stop)
        if control:
            server.gate.write_token(home)
            print(f"HTTP status server: control at {server.gate.login_url(server.url)}", flush=True)
        if announce:
            print(f"HTTP status server: serving {server.url} for {home}", flush=True)
        try:
            server.serve_forever(poll_interval=0.2)
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()
            if control:
                server.gate.remove_token(home)
        return EXIT_OK
    finally:
        view.close()


def _parser() -> argparse.ArgumentParser:
    parser = command_parser("python -m heidi_engine.ui.http", __doc__.splitlines()[0])
    add_home_option(parser)
    parser.add_argument(
        "--port",
        type=int,
        default=None,
        help="port (default: HTTP_PORT from config, 7779; 0 picks a free port)",
    )
    parser.add_argument(
        "--control",
        action="store_true",
        help="let the browser page pause, resume and stop the run: prints a URL with a one-time token "
        "(default: HTTP_CONTROL from config)",
    )
    parser.add_argument(
        "--host", default=LOOPBACK, help=f"must be {LOOPBACK}: the server never listens elsewhere"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; exit 2 for a non-loopback host or an invalid port/config, 1 when it cannot bind."""
    args = _parser().parse_args(argv)
    if args.host not in (LOOPBACK, "localhost"):
        print(
            f"HTTP status server: refusing to listen on {args.host!r}: the status server binds {LOOPBACK} only",
            file=sys.stderr,
        )
        return EXIT_BAD_USAGE
    try:
        home = open_home(resolve_home(args.home), create=False)
    except HomeError as exc:
        print(f"HTTP status server: {exc}", file=sys.stderr)
        return EXIT_BAD_USAGE
    try:
        port, control = _port(home, args.port, args.control)
    except ConfigError as exc:
        print(f"HTTP status server: invalid configuration:\n{exc}", file=sys.stderr)
        return EXIT_BAD_USAGE
    return serve(home, port=port, control=control)


if __name__ == "__main__":
    sys.exit(main())
