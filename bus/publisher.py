"""The agents' side of the bus: signed events, samples and heartbeats PUSHed to the ingress socket."""

from __future__ import annotations

import secrets

import zmq
from pydantic import BaseModel

from heidi_engine.bus.codec import encode
from heidi_engine.bus.connection import BusInfo
from heidi_engine.bus.context import new_socket
from heidi_engine.bus.errors import BusError
from heidi_engine.bus.remote import connect

# Pending events are flushed on close for this long: an agent's last events must not be lost, even
# while the supervisor is busy. A supervisor that is gone kills its agents anyway (PDEATHSIG).
CLOSE_LINGER_MS = 60_000


class Publisher:
    """PUSH to the supervisor's ingress. Sends block (backpressure) rather than drop an event."""

    def __init__(self, info: BusInfo, sender: str, *, send_timeout_s: float | None = 60.0, hwm: int = 100_000) -> None:
        self.info = info
        self.sender = sender
        self.session = secrets.token_hex(8)
        self._sock = new_socket(zmq.PUSH, linger_ms=CLOSE_LINGER_MS)
        self._sock.setsockopt(zmq.SNDHWM, hwm)
        if send_timeout_s is not None:
            self._sock.setsockopt(zmq.SNDTIMEO, int(send_timeout_s * 1000))
        connect(self._sock, info, info.ingress)
        self.sent = 0

    def send(self, kind: str, body: BaseModel) -> None:
        """Sign and send one message; :class:`BusError` if the supervisor does not take it in time."""
        frames = encode(self.info.key, kind, body, sender=self.sender, session=self.session)
        try:
            self._sock.send_multipart(frames)
        except zmq.ZMQError as exc:
            raise BusError(f"cannot send {kind} to the supervisor: {exc}") from None
        self.sent += 1

    def close(self) -> None:
        """Flush pending messages (bounded by the linger) and close."""
        self._sock.close()

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
