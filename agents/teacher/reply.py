"""Reading a 200 chat-completions reply, whole or streamed (server-sent events), into text and usage.

A reply is an answer only if it ended properly: a streamed one reached ``data: [DONE]``, and either kind
has a choice whose ``finish_reason`` is set and is not ``"length"`` (cut at the token cap),
``"content_filter"`` or ``"abort"``, with some content. Anything short of that is *incomplete*: the
server cut it (a stream closed early, an overloaded llama.cpp or vLLM server answering ``[DONE]`` with no
choice at all, a body without ``choices``). Its attempt is a failure the retry policy may try again,
never a sample. A reply that did end but cannot be read (a chunk that is not JSON, content that is not
text) is *malformed*: only that request failed.

A reply may lack ``usage`` (some servers, or a stream without ``include_usage``): that is reported as
``metered=False`` so the cost becomes "unknown" instead of silently $0. The tokens an incomplete or
malformed reply reported still count.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from heidi_engine.agents.teacher.transport import SSE_DONE, iter_sse

__all__ = ["UNFINISHED_REASONS", "ParsedReply", "ReplyTokens", "parse_reply", "tokens_in"]

# finish_reason values that say the answer did not end on its own.
UNFINISHED_REASONS = frozenset({"length", "content_filter", "abort"})


@dataclass(frozen=True)
class ReplyTokens:
    """The token counts one reply reported; ``metered`` is False when it reported none."""

    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    metered: bool = False


@dataclass(frozen=True)
class ParsedReply:
    """A readable answer, or ``error`` saying why it is not (its tokens still count); ``incomplete`` when
    the reply was cut short (see the module docstring) rather than malformed."""

    tokens: ReplyTokens
    text: str | None = None
    model: str | None = None
    finish_reason: str | None = None
    error: str | None = None
    incomplete: bool = False


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


def _server_error(payload: dict[str, Any]) -> str:
    """``: <message>`` of an ``error`` object a server put in a 200 reply or a stream chunk, else ""."""
    error = payload.get("error")
    message = error.get("message") if isinstance(error, dict) else error
    return f" (the server said: {message[:200]})" if isinstance(message, str) and message else ""


def _incomplete(tokens: ReplyTokens, why: str) -> ParsedReply:
    return ParsedReply(tokens, error=f"incomplete reply: {why}", incomplete=True)


def _ended(tokens: ReplyTokens, text: str, model: object, finish: object) -> ParsedReply:
    """The answer, unless it did not end properly."""
    if not isinstance(finish, str) or not finish:
        return _incomplete(tokens, "no finish_reason")
    if finish in UNFINISHED_REASONS:
        return _incomplete(tokens, f'finish_reason "{finish}"')
    if not text.strip():
        return _incomplete(tokens, "no content")
    return ParsedReply(tokens, text, model if isinstance(model, str) and model else None, finish)


def _whole(body: bytes) -> ParsedReply:
    try:
        payload = json.loads(body)
    except json.JSONDecodeError as exc:
        doc = exc.doc.strip()
        if not doc:
            return _incomplete(ReplyTokens(), "an empty body")
        if doc.startswith("{") and not doc.endswith("}"):  # an object that never closed: cut short
            return _incomplete(ReplyTokens(), "the body ends mid-JSON")
        return ParsedReply(ReplyTokens(), error="malformed reply: body is not a JSON object")
    except ValueError:  # not UTF-8
        return ParsedReply(ReplyTokens(), error="malformed reply: body is not a JSON object")
    if not isinstance(payload, dict):
        return ParsedReply(ReplyTokens(), error="malformed reply: body is not a JSON object")
    tokens = tokens_in(payload)
    choices = payload.get("choices")
    if not isinstance(choices, list) or not choices:
        return _incomplete(tokens, "no choices" + _server_error(payload))
    first = choices[0]
    if not isinstance(first, dict):
        return ParsedReply(tokens, error="malformed reply: choices[0] is not an object")
    message = first.get("message")
    content = message.get("content") if isinstance(message, dict) else None
    text = _message_text(content)
    if text is None and content is not None:
        return ParsedReply(tokens, error="malformed reply: choices[0].message.content is not text")
    return _ended(tokens, text or "", payload.get("model"), first.get("finish_reason"))


def _streamed(body: bytes) -> ParsedReply:
    parts: list[str] = []
    tokens, model, finish, done, unreadable, said = ReplyTokens(), None, None, False, False, ""
    for data in iter_sse(body):
        if data == SSE_DONE:
            done = True
            continue
        try:
            chunk = json.loads(data)
        except ValueError:
            chunk = None
        if not isinstance(chunk, dict):
            unreadable = True  # a cut last chunk, unless [DONE] follows
            continue
        if isinstance(chunk.get("usage"), dict):
            tokens = tokens_in(chunk)  # the last chunk, with include_usage
        if isinstance(chunk.get("model"), str) and chunk["model"]:
            model = chunk["model"]
        said = said or _server_error(chunk)
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
    if not done:
        return _incomplete(tokens, "the stream ended before [DONE]" + said)
    if unreadable:
        return ParsedReply(tokens, error="malformed reply: a stream chunk is not a JSON object")
    if said:
        return _incomplete(tokens, "an error in the stream" + said)
    return _ended(tokens, "".join(parts), model, finish)


def parse_reply(body: bytes, content_type: str) -> ParsedReply:
    """A 200 reply, streamed when the server answered with ``text/event-stream``."""
    if content_type.split(";")[0].strip().lower() == "text/event-stream":
        return _streamed(body)
    return _whole(body)
