"""Teacher failures as the generate stage keeps them: which end the stage, the row ``failed.jsonl`` records
for the others, and which recorded failures are for good (not asked again on resume).

A failure an outage caused (retries ran out on HTTP 408/409/429/5xx, a timeout or a connection error) is
``transient``, one whose replies were all cut short is ``incomplete``: a resumed stage asks again for
both. Rows written before ``kind`` was recorded are told by reason.
"""

from __future__ import annotations

import re
from typing import Any

from heidi_engine.agents.teacher.base import TeacherError
from heidi_engine.bus.event import utc_now_iso

__all__ = ["TRANSIENT_REASON", "failed_for_good", "failure_row", "stage_ending"]

# Failure reasons of attempts that ran out of retries on an outage: asked again on resume.
TRANSIENT_REASON = (
    r"^(HTTP (408|409|429|5\d\d)\b|no reply within|no complete reply within|connection error|proxy error)"
)
_TRANSIENT = re.compile(TRANSIENT_REASON)
_ASKED_AGAIN = frozenset({"transient", "incomplete"})  # kinds a resumed stage asks again for
# The server refused who we are or what we asked for: every further request would fail the same way.
_REFUSED = re.compile(r"^HTTP (401|403|404)\b")


def stage_ending(error: TeacherError, api_key_env: str) -> str | None:
    """Why ``error`` ends the stage (a fatal error, or a refusal), with what to check; None when only its
    sample failed."""
    if not (error.kind == "fatal" or _REFUSED.match(error.reason)):
        return None
    hint = (
        f"; check TEACHER_BASE_URL, TEACHER_MODEL and the key in ${api_key_env}"
        if _REFUSED.match(error.reason)
        else ""
    )
    return f"the teacher refused the request ({error.reason}){hint}"


def failure_row(job_id: str, phase: str, task_id: str, error: TeacherError) -> dict[str, Any]:
    """The ``failed.jsonl`` row of a failed request (``phase`` "solve" or "propose")."""
    return {
        "id": job_id,
        "phase": phase,
        "task_id": task_id,
        "reason": error.reason,
        "kind": error.kind,
        "usage": error.usage.record(),
        "ts": utc_now_iso(),
    }


def failed_for_good(row: dict[str, Any]) -> bool:
    """False for a failure an outage or cut replies caused (asked again on resume); rows before ``kind``
    by reason."""
    kind = row.get("kind")
    if kind is not None:
        return kind not in _ASKED_AGAIN
    return not _TRANSIENT.match(str(row.get("reason", "")))
