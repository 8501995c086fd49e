"""Reading a 200 chat-completions reply, whole or streamed (server-sent events), into text and usage.

A reply may lack ``usage`` (some servers, or a stream without ``include_usage``): that is reported as
``metered=False`` so the cost becomes "unknown" instead of silently $0.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from heidi_engine.agents.teacher.transport import iter_sse

__all__ = ["ParsedReply", "ReplyTokens", "parse_reply", "tokens_in"]


@dataclass(frozen=True)
class ReplyTokens:
    """The token counts one reply reported; ``metered`` is False when it reported none."""

    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    metered: bool = False


@dataclass(frozen=True)
class ParsedReply:
    """A readable reply, or ``error`` saying why it is not (its tokens still count)."""

    tokens: ReplyTokens
    text: str | None = None
    model: str | None = None
    finish_reason: str | None = None
    error: str | None = None


def _count(holder: dict[str, Any], key: str) -> int:
    value = holder.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def tokens_in(payload: object) -> ReplyTokens:
    """The ``usage`` object of a reply or stream chunk, with cached input tokens when reported."""
    usage = payload.get("usage") if isinstance(payload, dict) else None
    if not isinstance(usage, dict):
        return ReplyTokens()
    details = usage.get("prompt_tokens_details")
    cached = _count(details, "cached_tokens") if isinstance(details, dict) else 0
    prompt = _count(usage, "prompt_tokens")
    return ReplyTokens(prompt, _count(usage, "completion_tokens"), min(cached, prompt), metered=True)


def _message_text(content: object) -> str | None:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # some servers answer with content parts
        parts = [p.get("text") for p in content if isinstance(p, dict)]
        if parts and all(isinstance(p, str) for p in parts):
            return "".join(str(p) for p in parts)
    return None


def _json(data: bytes | str) -> Any:
    try:
        return json.loads(data)
    except ValueError:  # covers JSONDecodeError and UnicodeDecodeError
        return None


def _whole(body: bytes) -> ParsedReply:
    payload = _json(body)
    if not isinstance(payload, dict):
        return ParsedReply(ReplyTokens(), error="malformed reply: body is not a JSON object")
    tokens = tokens_in(payload)
    choices = payload.get("choices")
    first = choices[0] if isinstance(choices, list) and choices else None
    if not isinstance(first, dict):
        return ParsedReply(tokens, error="malformed reply: no choices")
    message = first.get("message")
    text = _message_text(message.get("content")) if isinstance(message, dict) else None
    if text is None:
        return ParsedReply(tokens, error="malformed reply: choices[0].message.content is not text")
    model, finish = payload.get("model"), first.get("finish_reason")
    return ParsedReply(
        tokens,
        text,
        model if isinstance(model, str) and model else None,
        finish if isinstance(finish, str) else None,
    )


def _streamed(body: bytes) -> ParsedReply:
    parts: list[str] = []
    tokens, model, finish, chunks = ReplyTokens(), None, None, 0
    for data in iter_sse(body):
        chunk = _json(data)
        if not isinstance(chunk, dict):
            return ParsedReply(tokens, error="malformed reply: a stream chunk is not a JSON object")
        chunks += 1
        if isinstance(chunk.get("usage"), dict):
            tokens = tokens_in(chunk)  # the last chunk, with include_usage
        if isinstance(chunk.get("model"), str) and chunk["model"]:
            model = chunk["model"]
        choices = chunk.get("choices")
        first = choices[0] if isinstance(choices, list) and choices else None
        if not isinstance(first, dict):
            continue
        delta = first.get("delta")
        content = delta.get("content") if isinstance(delta, dict) else None
        if isinstance(content, str):
            parts.append(content)
        if isinstance(first.get("finish_reason"), str):
            finish = first["finish_reason"]
    if not chunks:
        return ParsedReply(tokens, error="malformed reply: an empty stream")
    return ParsedReply(tokens, "".join(parts), model, finish)


def parse_reply(body: bytes, content_type: str) -> ParsedReply:
    """A 200 reply, streamed when the server answered with ``text/event-stream``."""
    if content_type.split(";")[0].strip().lower() == "text/event-stream":
        return _streamed(body)
    return _whole(body)
