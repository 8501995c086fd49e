"""The control client: one signed command, one reply, over a DEALER socket.

After a timeout the socket is closed and recreated, so a lost reply can never wedge the client (the
lazy-pirate pattern) and a late reply to an old request is never mistaken for the answer to a new one.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

import zmq

from heidi_engine.bus.codec import DecodeError, decode, encode
from heidi_engine.bus.connection import BusInfo
from heidi_engine.bus.context import new_socket
from heidi_engine.bus.errors import BusError, CommandRefused, ControlTimeout
from heidi_engine.bus.message import Command, Reply
from heidi_engine.bus.remote import connect

DEFAULT_TIMEOUT_S = 5.0


class ControlClient:
    """Sends commands to the supervisor's control socket and waits for the matching reply."""

    def __init__(self, info: BusInfo, *, sender: str = "client", timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.info = info
        self.sender = sender
        self.session = secrets.token_hex(8)
        self.timeout_s = timeout_s
        self.bad_replies = 0
        self._sock: zmq.Socket[bytes] | None = None

    def _socket(self) -> zmq.Socket[bytes]:
        if self._sock is None:
            sock = new_socket(zmq.DEALER, linger_ms=0, max_msg=8 * 1024 * 1024)
            connect(sock, self.info, self.info.control)
            self._sock = sock
        return self._sock

    def _reset(self) -> None:
        if self._sock is not None:
            self._sock.close(linger=0)
            self._sock = None

    def request(self, name: str, args: dict[str, Any] | None = None, *, timeout_s: float | None = None) -> Reply:
        """Send ``name`` with ``args``; the reply (ok or refused). :class:`ControlTimeout` if none comes."""
        command = Command(id=secrets.token_hex(8), name=name, args=args or {})
        sock = self._socket()
        frames = encode(self.info.key, "command", command, sender=self.sender, session=self.session)
        try:
            sock.send_multipart(frames, flags=zmq.NOBLOCK)
        except zmq.Again:
            self._reset()
            raise ControlTimeout(f"{name}: control socket not ready (is the supervisor running?)") from None
        except zmq.ZMQError as exc:
            self._reset()
            raise BusError(f"{name}: {exc}") from None
        deadline = time.monotonic() + (self.timeout_s if timeout_s is None else timeout_s)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not sock.poll(int(remaining * 1000) + 1, zmq.POLLIN):
                if time.monotonic() < deadline:
                    continue
                self._reset()
                raise ControlTimeout(f"{name}: no reply within {self.timeout_s if timeout_s is None else timeout_s:g} s")
            try:
                message = decode(sock.recv_multipart(zmq.NOBLOCK), self.info.key)
            except zmq.Again:
                continue
            except DecodeError:
                self.bad_replies += 1
                continue
            reply = message.body
            if isinstance(reply, Reply) and reply.id == command.id:
                return reply
            # A late reply to an earlier, timed-out request on a recreated socket cannot arrive here;
            # anything else is noise and is ignored.

    def call(self, name: str, args: dict[str, Any] | None = None, *, timeout_s: float | None = None) -> Any:
        """Like :meth:`request`, but returns the result and raises :class:`CommandRefused` on refusal."""
        reply = self.request(name, args, timeout_s=timeout_s)
        if not reply.ok:
            raise CommandRefused(reply.error or f"{name} refused")
        return reply.result

    def close(self) -> None:
        """Close the socket (idempotent)."""
        self._reset()

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
