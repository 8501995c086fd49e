"""The browser page's routes on the HTTP status server: the page itself, its data, its stream, its controls.

``GET /ui`` (and ``/ui/app.js``, ``/ui/app.css``: package data, no build step, nothing from the internet),
``GET /api/snapshot``, ``GET /api/stream`` (Server-Sent Events, :mod:`.stream`), ``GET /api/events``
(older events, from the supervisor's ``events`` command), ``GET /api/runs`` and ``GET /api/compare`` (what
``--list`` and ``--compare`` show), and ``POST /api/control/{pause,resume,stop}`` behind
:class:`~heidi_engine.ui.http.control.ControlGate`. Every body is allow-listed and redacted at this edge.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from http import HTTPStatus
from importlib import resources
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

from heidi_engine.bus.control import ControlClient
from heidi_engine.bus.errors import BusError, CommandRefused
from heidi_engine.ui.connect import NoSupervisor, local_supervisor
from heidi_engine.ui.http.control import COMMANDS, ControlGate
from heidi_engine.ui.http.page_data import json_safe, page_events, redacted
from heidi_engine.ui.http.stream import PageFeed
from heidi_engine.ui.menu.compare import CompareError, compare_runs
from heidi_engine.ui.menu.launch import runs_from_files

__all__ = ["ASSETS", "CSP", "PageRoutes", "load_assets"]

# What the page may load and where it may connect: itself, nothing else (no inline script or style either).
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
ASSETS: dict[str, tuple[str, str]] = {
    "/ui": ("index.html", "text/html; charset=utf-8"),
    "/ui/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/ui/app.css": ("app.css", "text/css; charset=utf-8"),
}
PAGE_HEADERS = {"Content-Security-Policy": CSP, "X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer"}
STREAMS_MAX = 32  # tabs streaming at once (each holds a thread); more get 503
_COMMAND_TIMEOUT_S = 5.0
_PAGE_MAX = 500


def load_assets() -> dict[str, bytes]:
    """The page's files, read once from the package."""
    folder = resources.files("heidi_engine.ui.http").joinpath("page")
    return {route: folder.joinpath(name).read_bytes() for route, (name, _type) in ASSETS.items()}


class Responder(Protocol):
    """What a route needs of the request handler."""

    path: str
    command: str
    headers: Any
    wfile: Any

    def _json(self, status: HTTPStatus, body: dict[str, Any], extra: dict[str, str] | None = None) -> None: ...
    def _send(
        self, status: HTTPStatus, content_type: str, payload: bytes, extra: dict[str, str] | None = None
    ) -> None: ...
    def send_response(self, code: int, message: str | None = None) -> None: ...
    def send_header(self, keyword: str, value: str) -> None: ...
    def end_headers(self) -> None: ...


def _query(target: str) -> dict[str, str]:
    return {key: values[-1] for key, values in parse_qs(urlsplit(target).query).items()}


def _int(query: Mapping[str, str], name: str, low: int, high: int, default: int | None = None) -> int:
    raw = query.get(name)
    if raw is None and default is not None:
        return default
    try:
        value = int(raw or "")
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {str(raw)[:40]!r}") from None
    if not low <= value <= high:
        raise ValueError(f"{name} must be in {low}..{high}, got {value}")
    return value


class PageRoutes:
    """The page's routes over one :class:`PageFeed` and one :class:`ControlGate`."""

    def __init__(self, home: Path, feed: PageFeed, gate: ControlGate, run_id: Callable[[], str | None]) -> None:
        self.home = home
        self.feed = feed
        self.gate = gate
        self.run_id = run_id
        self.assets = load_assets()
        self._streams = threading.BoundedSemaphore(STREAMS_MAX)

    def get(self, handler: Responder, path: str) -> bool:
        """Answer a ``GET`` of ``path`` if it is the page's; whether it was."""
        if path in ASSETS:
            self._asset(handler, path)
        elif path == "/api/snapshot":
            body = self.feed.snapshot()
            body["control"] = self.gate.holds(handler.headers)
            handler._json(HTTPStatus.OK, body)
        elif path == "/api/stream":
            self._stream(handler)
        elif path == "/api/events":
            self._events(handler)
        elif path == "/api/runs":
            self._runs(handler)
        elif path == "/api/compare":
            self._compare(handler)
        else:
            return False
        return True

    def _asset(self, handler: Responder, path: str) -> None:
        token = _query(handler.path).get("token") if path == "/ui" else None
        if token is not None:
            # A login: the token becomes a cookie and leaves the address bar (and the browser's history).
            if not self.gate.matches(token):
                self.gate.refuse()
                handler._json(HTTPStatus.FORBIDDEN, {"error": "wrong control token: use the URL the server printed"})
                return
            handler._send(HTTPStatus.SEE_OTHER, "text/plain; charset=utf-8", b"",
                          {"Location": "/ui", "Set-Cookie": self.gate.set_cookie()})  # fmt: skip
            return
        handler._send(HTTPStatus.OK, ASSETS[path][1], self.assets[path], PAGE_HEADERS)

    def _stream(self, handler: Responder) -> None:
        if not self._streams.acquire(blocking=False):
            handler._json(HTTPStatus.SERVICE_UNAVAILABLE, {"error": f"{STREAMS_MAX} streams are open already"})
            return
        try:
            handler.send_response(HTTPStatus.OK)
            for name, value in (("Content-Type", "text/event-stream; charset=utf-8"), ("Cache-Control", "no-store"),
                                ("X-Content-Type-Options", "nosniff"), ("X-Accel-Buffering", "no")):  # fmt: skip
                handler.send_header(name, value)
            handler.end_headers()
            if handler.command == "HEAD":
                return  # the headers only: a stream has no end to send
            control = self.gate.holds(handler.headers)
            try:
                self.feed.serve(handler.wfile, handler.headers.get("Last-Event-ID"),
                                lambda body: body.__setitem__("control", control))  # fmt: skip
            except (OSError, ValueError):
                pass  # the tab went away (or stopped reading for the socket timeout)
        finally:
            self._streams.release()

    def _events(self, handler: Responder) -> None:
        query = _query(handler.path)
        try:
            before = _int(query, "before", 1, 2**62)
            limit = _int(query, "limit", 1, _PAGE_MAX, default=_PAGE_MAX)
        except ValueError as exc:
            handler._json(HTTPStatus.BAD_REQUEST, {"error": str(exc)})
            return
        try:
            page = self._call("events", {"run_id": self.run_id(), "before": before, "limit": limit})
            body = {"events": page_events(page["events"]), "first": int(page["first"]), "more": bool(page["more"])}
        except CommandRefused as exc:
            handler._json(HTTPStatus.CONFLICT, {"error": str(exc)[:300]})
            return
        except (BusError, NoSupervisor, KeyError, TypeError, ValueError) as exc:
            handler._json(HTTPStatus.SERVICE_UNAVAILABLE, {"error": f"cannot load events: {str(exc)[:300]}"})
            return
        handler._json(HTTPStatus.OK, json_safe(body))

    def _runs(self, handler: Responder) -> None:
        try:
            runs = self._call("list_runs")
        except (BusError, NoSupervisor):
            runs = runs_from_files(self.home)  # what --list reads when no supervisor runs
        handler._json(HTTPStatus.OK, {"runs": redacted(runs)})

    def _compare(self, handler: Responder) -> None:
        query = _query(handler.path)
        try:
            result = compare_runs(self.home, query.get("a", ""), query.get("b", ""))
        except CompareError as exc:
            handler._json(HTTPStatus.BAD_REQUEST, {"error": str(exc)})
            return
        handler._json(HTTPStatus.OK, redacted(result))

    def post(self, handler: Responder, path: str) -> bool:
        """Answer a ``POST`` of ``path`` if it is a control route; whether it was."""
        prefix = "/api/control/"
        if not path.startswith(prefix):
            return False
        name = path[len(prefix):]
        why = self.gate.refusal(handler.headers) if name in COMMANDS else f"no control command {name[:40]!r}"
        if why is not None:
            self.gate.refuse()
            handler._json(HTTPStatus.FORBIDDEN, {"error": why})
            return True
        try:
            result = self._call(name)
        except CommandRefused as exc:
            handler._json(HTTPStatus.CONFLICT, {"error": str(exc)[:300]})
        except (BusError, NoSupervisor) as exc:
            handler._json(HTTPStatus.SERVICE_UNAVAILABLE, {"error": f"the supervisor did not answer: {str(exc)[:300]}"})
        else:
            handler._json(HTTPStatus.OK, {"ok": True, "result": redacted(result)})
        return True

    def _call(self, name: str, args: dict[str, Any] | None = None) -> Any:
        with ControlClient(local_supervisor(self.home), sender="http", timeout_s=_COMMAND_TIMEOUT_S) as client:
            return client.call(name, args)
