"""Freshness of control commands: a command is taken once, and only while it is recent.

Every command carries its sender's clock (the header's ``ts``) and a random id. The bus server takes a
command only when its time is within :data:`WINDOW_S` of its own and its (sender, session, id) was not
seen within that window: the same frames sent again — captured on a network, or replayed by a client
whose key was revoked — are refused (``replayed``), and so are frames older than the window (``stale``),
for which no nonce is kept any more. The nonces are bounded: past :data:`MAX_NONCES` the oldest are
forgotten, and every command not newer than what was forgotten is refused as stale, so a replay is never
taken because its nonce was dropped.
"""

from __future__ import annotations

import math
from collections import OrderedDict

__all__ = ["MAX_NONCES", "WINDOW_S", "Nonces"]

WINDOW_S = 300.0  # how far a sender's clock may be from the supervisor's (as Kerberos allows)
MAX_NONCES = 65_536


class Nonces:
    """The nonces of the commands taken within the window, and the verdict on each new one."""

    def __init__(self, window_s: float = WINDOW_S, max_nonces: int = MAX_NONCES) -> None:
        self.window_s = window_s
        self.max_nonces = max_nonces
        self._seen: OrderedDict[tuple[str, str, str], float] = OrderedDict()  # nonce -> its command's time
        self._floor = float("-inf")  # the newest time among forgotten nonces

    def check(self, nonce: tuple[str, str, str], ts: float, now: float) -> str | None:
        """``None`` when the command is fresh (and remember its nonce); else why not: ``stale`` or ``replayed``."""
        while self._seen:
            oldest_nonce, oldest_ts = next(iter(self._seen.items()))
            if oldest_ts >= now - self.window_s:
                break
            del self._seen[oldest_nonce]
        if not math.isfinite(ts) or abs(ts - now) > self.window_s or ts <= self._floor:
            return "stale"
        if nonce in self._seen:
            return "replayed"
        if len(self._seen) >= self.max_nonces:
            _, forgotten = self._seen.popitem(last=False)
            self._floor = max(self._floor, forgotten)
        self._seen[nonce] = ts
        return None
