"""A pool of OpenAI-compatible teacher endpoints: where each request goes, and what each endpoint did.

``TEACHER_BASE_URL`` may list several servers (say, one vLLM per GPU box), comma-separated. Each attempt
goes to the endpoint with the fewest requests in flight; ties go round robin, so an idle pool is filled
evenly. An endpoint that failed ``fail_threshold`` times in a row (connection refused or reset, a
timeout, HTTP 5xx: the server, not the request, is at fault) is taken out for a back-off that doubles on
every further failure (``backoff_base_s``, twice that, ... up to ``backoff_max_s``); a 4xx answer or a
good reply puts it back to zero. A retry avoids the endpoint that just failed it when another one is in.
When every endpoint is out, the attempt goes to the one whose back-off ends first: the caller's own
retry and park logic paces it, as it does with a single server. A retry is sent at once, without the
caller's back-off wait, only while another endpoint is in and its latest attempt did not fail.

Each endpoint keeps what it was sent (:class:`TeacherUsage`), its failed attempts and the latency of its
recent good replies. Endpoints are named without credentials: scheme, host, port and path, never the
user info, query or fragment of the URL.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from heidi_engine.agents.teacher.usage import TeacherUsage

__all__ = ["Endpoint", "EndpointReport", "TeacherPool", "endpoint_name", "split_urls"]

_LATENCY_WINDOW = 256  # recent good replies a percentile is taken over


def split_urls(value: str) -> list[str]:
    """The endpoints of a comma-separated ``TEACHER_BASE_URL``, stripped, empty items dropped."""
    return [part.strip() for part in value.split(",") if part.strip()]


def endpoint_name(url: str) -> str:
    """``url`` as it may be shown: scheme://host[:port]/path, with no user info, query or fragment."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"  # an IPv6 literal keeps its brackets
    try:
        port = parts.port
    except ValueError:
        port = None
    netloc = host if port is None else f"{host}:{port}"
    return f"{parts.scheme}://{netloc}{parts.path.rstrip('/')}"


@dataclass(frozen=True)
class EndpointReport:
    """One endpoint's totals since the pool was made, and its state now."""

    name: str
    usage: TeacherUsage
    errors: int
    in_flight: int
    out_for_s: float  # seconds left of its back-off; 0.0 while it takes requests
    latency_p50_s: float | None
    latency_p95_s: float | None


class Endpoint:
    """One server of the pool; its counters change only under the pool's lock."""

    def __init__(self, url: str, index: int) -> None:
        self.url = url
        self.name = endpoint_name(url)
        self.index = index
        self.in_flight = 0
        self.failures = 0  # in a row
        self.out_until = 0.0
        self.usage = TeacherUsage()
        self.errors = 0
        self.latencies: deque[float] = deque(maxlen=_LATENCY_WINDOW)

    def __repr__(self) -> str:
        return f"Endpoint({self.name!r})"


class TeacherPool:
    """Chooses an endpoint per attempt and keeps each endpoint's tallies; safe to share between threads."""

    def __init__(
        self,
        urls: Sequence[str],
        *,
        fail_threshold: int = 3,
        backoff_base_s: float = 1.0,
        backoff_max_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not urls:
            raise ValueError("a teacher pool needs at least one endpoint URL")
        names = [endpoint_name(url) for url in urls]
        for name in names:
            if names.count(name) > 1:
                raise ValueError(f"endpoint {name} is listed twice in TEACHER_BASE_URL")
        if fail_threshold < 1:
            raise ValueError(f"fail_threshold must be >= 1, got {fail_threshold!r}")
        if not (0.0 < backoff_base_s <= backoff_max_s):
            raise ValueError(
                f"need 0 < backoff_base_s <= backoff_max_s, got {backoff_base_s!r} and {backoff_max_s!r}"
            )
        self.endpoints = [Endpoint(url, i) for i, url in enumerate(urls)]
        self._fail_threshold = fail_threshold
        self._backoff_base_s = backoff_base_s
        self._backoff_max_s = backoff_max_s
        self._clock = clock
        self._lock = threading.Lock()
        self._turn = itertools.count()

    def acquire(self, avoid: Endpoint | None = None) -> Endpoint:
        """The endpoint for the next attempt, counted in flight until :meth:`release`."""
        with self._lock:
            now = self._clock()
            live = [e for e in self.endpoints if e.out_until <= now]
            if avoid is not None and len(live) > 1:
                live = [e for e in live if e is not avoid]
            if live:
                fewest = min(e.in_flight for e in live)
                tied = [e for e in live if e.in_flight == fewest]
                chosen = tied[next(self._turn) % len(tied)]
            else:
                chosen = min(self.endpoints, key=lambda e: (e.out_until, e.index))
            chosen.in_flight += 1
            return chosen

    def release(
        self, endpoint: Endpoint, usage: TeacherUsage, *, failed: bool, latency_s: float | None = None
    ) -> None:
        """One attempt at ``endpoint`` is over: count ``usage``; ``failed`` when the server was at fault."""
        with self._lock:
            endpoint.in_flight -= 1
            endpoint.usage += usage
            if not failed:
                endpoint.failures = 0
                endpoint.out_until = 0.0
                if latency_s is not None:
                    endpoint.latencies.append(latency_s)
                return
            endpoint.errors += 1
            endpoint.failures += 1
            over = endpoint.failures - self._fail_threshold
            if over >= 0:
                backoff = min(self._backoff_max_s, self._backoff_base_s * 2.0 ** min(over, 30))
                endpoint.out_until = self._clock() + backoff

    def charge(self, endpoint: Endpoint, usage: TeacherUsage) -> None:
        """Count ``usage`` that belongs to no single attempt's outcome (a retry decided after it)."""
        with self._lock:
            endpoint.usage += usage

    def another_is_in(self, endpoint: Endpoint) -> bool:
        """Whether an endpoint other than ``endpoint`` takes requests now and its latest attempt did not
        fail: a retry can go there at once. (When every server is struggling, retries wait as usual.)"""
        with self._lock:
            now = self._clock()
            return any(e is not endpoint and e.out_until <= now and not e.failures for e in self.endpoints)

    def report(self) -> list[EndpointReport]:
        """Every endpoint's totals and state, in the order they were listed."""
        with self._lock:
            now = self._clock()
            return [
                EndpointReport(
                    name=e.name,
                    usage=e.usage,
                    errors=e.errors,
                    in_flight=e.in_flight,
                    out_for_s=max(0.0, e.out_until - now),
                    latency_p50_s=_percentile(e.latencies, 0.50),
                    latency_p95_s=_percentile(e.latencies, 0.95),
                )
                for e in self.endpoints
            ]


def _percentile(values: Sequence[float], q: float) -> float | None:
    """The nearest-rank percentile ``q`` (0–1) of ``values``; None when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 1))  # ceil(n*q), at least 1
    return ordered[int(rank) - 1]
