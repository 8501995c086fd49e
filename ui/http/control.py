"""Who may steer the run from a browser: the holder of the server's control token, and no one else.

Read-only by default. A server started with ``--control`` makes a random token (as Jupyter does) and prints
the URL that holds it; opening that URL sets an HttpOnly, SameSite=Strict cookie. A ``POST`` that pauses,
resumes or stops the run needs that cookie, an ``Origin`` of this very server and an allowed ``Host``:
another page in the same browser cannot forge the first (SameSite), read the token (HttpOnly) or pass the
second, and a name that resolves here (DNS rebinding) fails the third. Every refusal is counted.
"""

from __future__ import annotations

import hmac
import os
import secrets
import threading
from collections.abc import Mapping
from http.cookies import CookieError, SimpleCookie
from pathlib import Path

from heidi_engine.bus.storage import atomic_write_bytes

__all__ = ["COMMANDS", "TOKEN_FILE", "ControlGate", "allowed_hosts"]

TOKEN_FILE = "http_control.token"
COMMANDS = ("pause", "resume", "stop")
_LOOPBACK_NAMES = ("127.0.0.1", "localhost")


def allowed_hosts(port: int) -> set[str]:
    """The ``Host`` values this server answers for: the loopback names, with its port or none."""
    return {f"{name}{suffix}" for name in _LOOPBACK_NAMES for suffix in ("", f":{port}")}


class ControlGate:
    """The token (``None``: read-only) and the checks a control request must pass."""

    def __init__(self, token: str | None, port: int) -> None:
        self.token = token
        self.port = port
        self._lock = threading.Lock()
        self._refused = 0

    @classmethod
    def with_new_token(cls, port: int) -> ControlGate:
        """A gate with a fresh random token (192 bits, URL-safe)."""
        return cls(secrets.token_urlsafe(24), port)

    @property
    def refused(self) -> int:
        """Control requests and token logins refused since the server started."""
        with self._lock:
            return self._refused

    def refuse(self) -> None:
        """Count one refusal."""
        with self._lock:
            self._refused += 1

    def login_url(self, base: str) -> str:
        """The URL that hands this browser the cookie."""
        return f"{base}/ui?token={self.token}"

    def matches(self, token: str | None) -> bool:
        """Whether ``token`` is this gate's (compared in constant time)."""
        return self.token is not None and token is not None and hmac.compare_digest(token, self.token)

    @property
    def cookie(self) -> str:
        """The cookie's name, with this server's port: browsers keep cookies by host, not by port, so two
        servers on one machine (two homes) must not overwrite each other's."""
        return f"autotrain_control_{self.port}"

    def set_cookie(self) -> str:
        """The ``Set-Cookie`` value a good login gets (a session cookie, for this server's paths only)."""
        return f"{self.cookie}={self.token}; HttpOnly; SameSite=Strict; Path=/"

    def holds(self, headers: Mapping[str, str]) -> bool:
        """Whether the request carries this gate's cookie."""
        raw = headers.get("Cookie")
        if not raw or self.token is None:
            return False
        try:
            jar = SimpleCookie(raw)
        except CookieError:
            return False
        morsel = jar.get(self.cookie)
        return morsel is not None and self.matches(morsel.value)

    def refusal(self, headers: Mapping[str, str]) -> str | None:
        """Why a control ``POST`` with ``headers`` is refused (``None``: it may go through)."""
        if self.token is None:
            return "this server is read-only: start it with --control (or HTTP_CONTROL: \"1\") to steer the run"
        host = (headers.get("Host") or "").strip().lower()
        if host not in allowed_hosts(self.port):
            return f"Host {host[:100]!r} is not this server"
        origin = (headers.get("Origin") or "").strip().lower()
        if origin not in {f"http://{name}" for name in allowed_hosts(self.port) if ":" in name}:
            return "a control request must come from this server's own page (Origin " + repr(origin[:100]) + ")"
        site = headers.get("Sec-Fetch-Site")
        if site is not None and site != "same-origin":
            return f"a control request must be same-origin (Sec-Fetch-Site {site[:40]!r})"
        if not self.holds(headers):
            return "no control cookie: open the control URL the server printed (it holds the token)"
        return None

    def write_token(self, home: Path) -> Path:
        """Write the token to ``home/http_control.token`` (0600), for a user who lost the printed URL."""
        path = home / TOKEN_FILE
        atomic_write_bytes(path, f"{self.token}\n".encode())
        return path

    @staticmethod
    def remove_token(home: Path) -> None:
        """Remove the token file (the token dies with the server)."""
        try:
            os.unlink(home / TOKEN_FILE)
        except FileNotFoundError:
            pass
