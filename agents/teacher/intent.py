"""The round's teacher requests, written ahead: a row before each request is sent, one when it landed.

The provider bills a request once it is sent, whether or not its reply is ever read. A kill -9 between
the send and the reply leaves no sample, no failure row and no event for it; only this file
(``data/round_N/requests.jsonl``) says it went out. Each attempt of
:class:`~heidi_engine.agents.teacher.attempts.AttemptLoop` appends, on its worker thread:

- ``{"sent": id, "retry": bool, "input_max": bytes, "output_max": tokens, "ts": ...}`` before the request
  leaves (one whole line with O_APPEND, synced to the disk first: a row is never missing for a request
  that went out), with ``retry`` true for every attempt of a call but its first;
- ``{"landed": id, "usage": {...}}`` once it is over, whatever the outcome (a reply, an error status, a
  timeout, a dropped connection), with what that attempt used.

:func:`read_intents` adds the file up: every landed attempt's usage, a retry per ``retry`` row, and each
request sent that never landed counted as a timed-out attempt is, at its most (every byte of the request
as an input token, the whole token cap as output). That is everything the round's requests used, those
whose outcome only an event recorded (an outage's failed attempts) included, so a resumed stage compares
it with what ``events.jsonl`` counted and reports the difference.
"""

from __future__ import annotations

import itertools
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

from heidi_engine.agents.dataset.samples import JsonlAppender, read_jsonl_skipping_bad
from heidi_engine.agents.teacher.usage import TeacherUsage
from heidi_engine.bus.event import utc_now_iso

__all__ = ["IntentLog", "Intents", "read_intents"]



class IntentLog:
    """Appends the rows of one stage attempt to ``path``; safe to share between worker threads."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._appender: JsonlAppender | None = None  # opened by the first row: a teacher that sends nothing
        self._lock = threading.Lock()
        self._session = uuid.uuid4().hex[:12]  # ids of a restarted stage never meet this one's
        self._numbers = itertools.count(1)
        self._closed = False

    def sent(self, input_max: int, output_max: int, *, retry: bool) -> str:
        """Record a request about to be sent (``input_max`` bytes, at most ``output_max`` tokens back);
        returns its id for :meth:`landed`. Raises OSError when it cannot be written: then it is not sent."""
        with self._lock:
            appender = self._open()
            request_id = f"{self._session}-{next(self._numbers)}"
            row = {"sent": request_id, "retry": retry, "input_max": input_max, "output_max": output_max,
                   "ts": utc_now_iso()}  # fmt: skip
            appender.append(row, sync=False)
        appender.sync()  # outside the lock: the other workers' rows need not wait for this disk flush
        return request_id

    def landed(self, request_id: str, usage: TeacherUsage) -> None:
        """Record that request ``request_id`` is over and what it used. Not synced: if the disk loses the
        row, the request counts at its most, which errs high, never low."""
        with self._lock:
            self._open().append({"landed": request_id, "usage": usage.record()}, sync=False)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._appender is not None:
                self._appender.close()

    def __enter__(self) -> IntentLog:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _open(self) -> JsonlAppender:
        """The appender (under the lock); opened on first use, which also cuts a torn last line off."""
        if self._closed:
            raise ValueError(f"{self.path}: the intent log is closed")
        if self._appender is None:
            self._appender = JsonlAppender(self.path)
        return self._appender


@dataclass(frozen=True)
class Intents:
    """What a round's intent file adds up to: the usage of every request it records, and how many of
    them were sent but never landed (counted at their most in ``usage``)."""

    usage: TeacherUsage
    requests: int
    lost: int


def read_intents(path: Path) -> Intents:
    """Add up the intent file at ``path`` (empty when there is none; bad lines are skipped)."""
    sent: dict[str, dict[str, object]] = {}
    landed: dict[str, TeacherUsage] = {}
    for row in read_jsonl_skipping_bad(path):
        if isinstance(row.get("sent"), str):
            sent[row["sent"]] = row
        elif isinstance(row.get("landed"), str):
            landed[row["landed"]] = TeacherUsage.from_record(row.get("usage"))
    usage = TeacherUsage()
    lost = 0
    for request_id, row in sent.items():
        if row.get("retry") is True:
            usage += TeacherUsage(retries=1)
        if request_id in landed:
            usage += landed[request_id]
        else:
            lost += 1
            usage += TeacherUsage(
                requests_sent=1,
                timed_out=1,
                timed_out_input_max=_size(row.get("input_max")),
                timed_out_output_max=_size(row.get("output_max")),
            )
    return Intents(usage, len(sent), lost)


def _size(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0
