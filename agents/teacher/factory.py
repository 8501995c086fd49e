"""Opening the teacher a run's configuration names: the in-process model for ``TEACHER_MODEL=local:<model>``,
else the HTTP client for ``TEACHER_BASE_URL`` (one server or a comma-separated pool).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from heidi_engine.agents.teacher.base import Teacher
from heidi_engine.agents.teacher.client import OpenAITeacher
from heidi_engine.agents.teacher.intent import IntentLog
from heidi_engine.agents.teacher.local import LocalTeacher, local_model_name
from heidi_engine.agents.teacher.pool import split_urls
from heidi_engine.bus.config import AutoTrainConfig

__all__ = ["TeacherUnavailable", "open_teacher"]


class TeacherUnavailable(Exception):
    """The configured teacher cannot be opened; the message says why and what to set."""


def open_teacher(config: AutoTrainConfig, intents: IntentLog | None = None) -> Teacher:
    """The teacher ``config`` names; raises :class:`TeacherUnavailable`. An HTTP teacher writes each request
    down in ``intents`` before sending it (a model in this process sends nothing to bill)."""
    try:
        local = local_model_name(config.TEACHER_MODEL)
    except ValueError as exc:
        raise TeacherUnavailable(str(exc)) from None
    if local is not None:
        # Imported here: the student module imports torch, which an HTTP teacher never needs.
        from heidi_engine.agents.student import ModelNotAvailable

        try:
            return LocalTeacher(
                config.TEACHER_MODEL,
                max_tokens=config.TEACHER_MAX_TOKENS,
                temperature=config.TEACHER_TEMPERATURE,
                seed=config.SEED,
            )
        except (ModelNotAvailable, ValueError) as exc:
            reason = f"teacher model {config.TEACHER_MODEL!r} is not available: {exc}"
            raise TeacherUnavailable(reason) from None
    key = config.teacher_api_key()
    urls = split_urls(config.TEACHER_BASE_URL)
    if key is None and any(urlsplit(url).hostname == "api.openai.com" for url in urls):
        raise TeacherUnavailable(
            f"no API key for {config.TEACHER_BASE_URL}: set the environment variable "
            f"{config.TEACHER_API_KEY_ENV} (named by TEACHER_API_KEY_ENV) before starting the supervisor"
        )
    try:
        return OpenAITeacher(
            config.TEACHER_BASE_URL,
            config.TEACHER_MODEL,
            key,
            timeout_s=config.TEACHER_TIMEOUT_S,
            max_retries=config.TEACHER_MAX_RETRIES,
            max_total_wait_s=config.TEACHER_RETRY_BUDGET_S,
            max_tokens=config.TEACHER_MAX_TOKENS,
            temperature=config.TEACHER_TEMPERATURE,
            stream=config.TEACHER_STREAM == "1",
            park_interval_s=config.TEACHER_PARK_INTERVAL_S,
            intents=intents,
        )
    except ValueError as exc:
        raise TeacherUnavailable(f"invalid teacher settings: {exc}") from None
