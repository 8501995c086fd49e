"""The HTTP teacher's retry policy: what kind a failed attempt is, how long to wait before the next, when
to give up, and what a failure's reason may say (never the API key).

The kinds are those of :class:`~heidi_engine.agents.teacher.base.TeacherError` (see
:mod:`heidi_engine.agents.teacher.client` for what each means).
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from heidi_engine.agents.teacher.base import ErrorKind, TeacherError
from heidi_engine.agents.teacher.request import ProviderError, is_quota_error
from heidi_engine.agents.teacher.usage import TeacherUsage

__all__ = ["RetryPolicy"]

_RETRYABLE_STATUS = frozenset({408, 409, 429})
_FATAL_STATUS = frozenset({401, 403, 404})
_REASON_MAX = 300
_SAME_400_FATAL = 3  # the same 400 this many times in a row: every request is wrong, not one sample
_RETRYABLE_KINDS = frozenset({"transient", "incomplete"})


class RetryPolicy:
    """One client's retry decisions; it remembers the last HTTP 400 across calls. Safe to share between
    threads."""

    def __init__(
        self,
        api_key: str | None,
        *,
        max_retries: int,
        max_total_wait_s: float,
        backoff_base_s: float,
        backoff_max_s: float,
        jitter: Callable[[], float],
    ) -> None:
        self._api_key = api_key
        self._max_retries = max_retries
        self._max_total_wait_s = max_total_wait_s
        self._backoff_base_s = backoff_base_s
        self._backoff_max_s = backoff_max_s
        self._jitter = jitter
        self._lock = threading.Lock()
        self._last_400: tuple[str, int] = ("", 0)

    def kind_of(self, status: int, error: ProviderError, failure: str) -> ErrorKind:
        """The kind of a non-200 reply; ``failure`` is its reason, compared with the previous 400's."""
        if status in _FATAL_STATUS or is_quota_error(status, error):
            return "fatal"
        if status in _RETRYABLE_STATUS or status >= 500:
            return "transient"
        if status == 400:
            with self._lock:
                last, count = self._last_400
                self._last_400 = (failure, count + 1 if failure == last else 1)
                if self._last_400[1] >= _SAME_400_FATAL:
                    return "fatal"
        return "sample"

    def succeeded(self) -> None:
        """A reply was read: the run of identical 400s is broken."""
        with self._lock:
            self._last_400 = ("", 0)

    def stop_unless_retryable(self, failure: str, kind: ErrorKind, spent: TeacherUsage) -> None:
        """Raise the call's TeacherError when ``kind`` is not one to try again (transient, incomplete) or
        its retries ran out."""
        if kind not in _RETRYABLE_KINDS:
            raise TeacherError(self.redact(failure), spent, kind)
        if spent.retries >= self._max_retries:
            raise TeacherError(self.redact(f"{failure} (gave up after {spent.retries} retries)"), spent, kind)

    def delay(
        self, server_wait: float | None, failure: str, kind: ErrorKind, spent: TeacherUsage, waited: float
    ) -> float:
        """The wait before the next attempt: the server's, else the back-off; raises TeacherError when it
        would push the call's total waiting past ``max_total_wait_s``."""
        delay = server_wait if server_wait is not None else self.backoff(spent.retries)
        if waited + delay > self._max_total_wait_s:
            reason = (
                f"{failure} (next wait {delay:.1f}s would exceed max_total_wait_s="
                f"{self._max_total_wait_s:g}, already waited {waited:.1f}s)"
            )
            raise TeacherError(self.redact(reason), spent, kind)
        return delay

    def backoff(self, retries_done: int) -> float:
        """Exponential back-off with jitter, capped at ``backoff_max_s``."""
        ceiling = min(self._backoff_max_s, self._backoff_base_s * (2.0**retries_done))
        # "Equal jitter": spreads synchronised workers apart but never waits less than half the step.
        return ceiling * (0.5 + 0.5 * min(1.0, max(0.0, self._jitter())))

    def redact(self, reason: str) -> str:
        """``reason`` without the API key, cut to a readable length."""
        # Servers echo parts of a bad key back ("Incorrect API key provided: sk-..."): never pass it on.
        if self._api_key:
            reason = reason.replace(self._api_key, "[REDACTED]")
        return reason if len(reason) <= _REASON_MAX else reason[: _REASON_MAX - 3] + "..."
