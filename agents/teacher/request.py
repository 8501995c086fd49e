"""What a chat-completions request looks like for a model family, and reading what the provider said.

Reasoning models (OpenAI's o1/o3/o4 series and gpt-5) reject ``max_tokens`` and any ``temperature`` but
the default with HTTP 400; they take ``max_completion_tokens`` instead. The name rule below catches the
known families (also behind a router prefix such as ``openai/o3-mini``); a provider that answers
"unsupported parameter" for another model switches the client to the reasoning form once.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any

__all__ = [
    "ProviderError",
    "is_quota_error",
    "is_reasoning_model",
    "is_unsupported_parameter",
    "provider_error",
    "request_body",
    "retry_after_s",
]

_REASONING = re.compile(r"^(o\d+(-|$)|gpt-5)")
_SAMPLING_PARAMS = ("max_tokens", "temperature")
_QUOTA_CODES = frozenset({"insufficient_quota", "billing_hard_limit_reached", "billing_not_active"})


def is_reasoning_model(model: str) -> bool:
    """True for models that want ``max_completion_tokens`` and no ``temperature`` (o1, o3-mini, gpt-5...)."""
    return _REASONING.match(model.rsplit("/", 1)[-1].lower()) is not None


def request_body(
    model: str,
    messages: list[dict[str, str]],
    *,
    max_tokens: int,
    temperature: float,
    reasoning: bool,
    stream: bool,
) -> bytes:
    """The JSON body of one chat-completions request."""
    request: dict[str, Any] = {"model": model, "messages": messages}
    if reasoning:
        request["max_completion_tokens"] = max_tokens
    else:
        request["max_tokens"] = max_tokens
        request["temperature"] = temperature
    if stream:
        # Without include_usage a streamed reply carries no token counts at all.
        request["stream"] = True
        request["stream_options"] = {"include_usage": True}
    return json.dumps(request).encode("utf-8")


@dataclass(frozen=True)
class ProviderError:
    """The ``error`` object of a non-200 reply, as far as it could be read."""

    message: str = ""
    code: str = ""
    type: str = ""
    param: str = ""


def provider_error(body: bytes) -> ProviderError:
    """The provider's error object (OpenAI's shape, also served by vLLM, llama.cpp, Ollama and Anthropic)."""
    try:
        payload = json.loads(body)
    except ValueError:
        return ProviderError()
    error = payload.get("error") if isinstance(payload, dict) else None
    if isinstance(error, str):
        return ProviderError(message=error)
    if not isinstance(error, dict):
        return ProviderError()

    def text(key: str) -> str:
        value = error.get(key)
        return value if isinstance(value, str) else ""

    return ProviderError(text("message"), text("code"), text("type"), text("param"))


def is_quota_error(status: int, error: ProviderError) -> bool:
    """Out of credit or over a billing limit: no retry helps until the user acts."""
    if status == 402:
        return True
    if error.code in _QUOTA_CODES or error.type in _QUOTA_CODES:
        return True
    return status == 429 and "quota" in error.message.lower() and "exceeded" in error.message.lower()


def is_unsupported_parameter(status: int, error: ProviderError) -> bool:
    """A 400 refusing ``max_tokens`` or ``temperature``: the model wants the reasoning form."""
    if status != 400:
        return False
    if error.param in _SAMPLING_PARAMS and error.code in ("unsupported_parameter", "unsupported_value"):
        return True
    message = error.message.lower()
    return any(p in message for p in _SAMPLING_PARAMS) and (
        "unsupported" in message or "not supported" in message
    )


def retry_after_s(headers: dict[str, str] | Any) -> float | None:
    """The server's requested wait in seconds, or None when it gave none we can read."""
    millis = headers.get("retry-after-ms")
    if millis is not None:
        try:
            value = float(millis) / 1000.0
        except ValueError:
            value = -1.0
        if value >= 0.0 and value == value:
            return value
    raw = headers.get("retry-after")
    if raw is None:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        try:
            when = parsedate_to_datetime(raw)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        # An absolute date needs the wall clock; a date in the past means "now".
        return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())
    return seconds if seconds >= 0.0 and seconds == seconds else None
