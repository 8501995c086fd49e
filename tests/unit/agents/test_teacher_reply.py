"""Reading a 200 reply: an answer only if it ended properly; cut replies are incomplete, not malformed."""

from __future__ import annotations

import json
from typing import Any

import pytest

from heidi_engine.agents.teacher.reply import ReplyTokens, parse_reply

SSE = "text/event-stream"
JSON = "application/json"
USAGE = {"prompt_tokens": 7, "completion_tokens": 3}


def stream(*chunks: dict[str, Any], done: bool = True) -> bytes:
    lines = [f"data: {json.dumps(chunk)}\n\n" for chunk in chunks] + (["data: [DONE]\n\n"] if done else [])
    return "".join(lines).encode()


def delta(content: str | None = None, finish: str | None = None) -> dict[str, Any]:
    piece: dict[str, Any] = {} if content is None else {"content": content}
    return {"model": "m", "choices": [{"index": 0, "delta": piece, "finish_reason": finish}]}


def whole(**choice: Any) -> bytes:
    return json.dumps({"model": "m", "choices": [{"index": 0, **choice}], "usage": USAGE}).encode()


def test_the_llama_cpp_stream_with_a_role_and_done_but_no_answer_is_incomplete() -> None:
    body = b'data: {"choices":[{"delta":{"role":"assistant"}}]}\n\ndata: [DONE]\n\n'
    parsed = parse_reply(body, SSE)
    assert parsed.incomplete and parsed.text is None
    assert parsed.error == "incomplete reply: no finish_reason"


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (stream(delta("def f():"), delta("\n    return 1")), "no finish_reason"),
        (stream(delta("def f():"), delta(finish="length")), 'finish_reason "length"'),
        (stream(delta(""), delta(finish="stop")), "no content"),
        (stream(delta("  \n"), delta(finish="stop")), "no content"),
        (stream(delta("def f():"), delta(finish="stop"), done=False), "the stream ended before [DONE]"),
        (stream(delta("def f():"), done=False)[:-9], "the stream ended before [DONE]"),  # cut mid-chunk
        (b"", "the stream ended before [DONE]"),
        (
            stream(delta("def"), {"error": {"message": "worker died"}}),
            "an error in the stream (the server said: worker died)",
        ),
    ],
)
def test_a_stream_that_did_not_end_properly_is_incomplete(body: bytes, why: str) -> None:
    parsed = parse_reply(body, SSE)
    assert (parsed.incomplete, parsed.error, parsed.text) == (True, f"incomplete reply: {why}", None)


def test_a_cut_stream_still_reports_the_tokens_it_carried() -> None:
    body = stream(delta("x"), {"choices": [], "usage": USAGE})
    parsed = parse_reply(body, SSE)
    assert parsed.incomplete
    assert parsed.tokens == ReplyTokens(7, 3, 0, metered=True)


def test_a_stream_that_ended_is_the_answer() -> None:
    body = stream(
        delta("def f():"), delta("\n    return 1"), delta(finish="stop"), {"choices": [], "usage": USAGE}
    )
    parsed = parse_reply(body, "text/event-stream; charset=utf-8")
    assert (parsed.text, parsed.finish_reason, parsed.model, parsed.error) == (
        "def f():\n    return 1",
        "stop",
        "m",
        None,
    )
    assert not parsed.incomplete and parsed.tokens.metered


def test_an_unreadable_chunk_in_a_stream_that_ended_is_malformed_not_incomplete() -> None:
    body = b"data: {not json\n\n" + stream(delta("x", "stop"))
    parsed = parse_reply(body, SSE)
    assert not parsed.incomplete and parsed.error == "malformed reply: a stream chunk is not a JSON object"


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (json.dumps({"choices": [], "usage": USAGE}).encode(), "no choices"),
        (json.dumps({"object": "chat.completion"}).encode(), "no choices"),
        (
            json.dumps({"error": {"message": "overloaded"}}).encode(),
            "no choices (the server said: overloaded)",
        ),
        (whole(message={"role": "assistant", "content": "def f(): pass"}), "no finish_reason"),
        (whole(message={"content": "def f(): pass"}, finish_reason="length"), 'finish_reason "length"'),
        (
            whole(message={"content": "def f(): pass"}, finish_reason="content_filter"),
            'finish_reason "content_filter"',
        ),
        (whole(message={"content": ""}, finish_reason="stop"), "no content"),
        (whole(message={"content": None}, finish_reason="stop"), "no content"),
        (b'{"choices": [ {"message": ', "the body ends mid-JSON"),
        (b'{"id": "chatcmpl-1", "object": "chat.compl', "the body ends mid-JSON"),  # inside a string
        (b'{"choices": [], "usage": nu', "the body ends mid-JSON"),
        (b"", "an empty body"),
    ],
)
def test_a_body_that_did_not_end_properly_is_incomplete(body: bytes, why: str) -> None:
    parsed = parse_reply(body, JSON)
    assert (parsed.incomplete, parsed.error, parsed.text) == (True, f"incomplete reply: {why}", None)


def test_a_body_without_choices_keeps_its_tokens() -> None:
    assert parse_reply(json.dumps({"choices": [], "usage": USAGE}).encode(), JSON).tokens.input_tokens == 7


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"<html>502</html>", "malformed reply: body is not a JSON object"),
        (b"[1, 2]", "malformed reply: body is not a JSON object"),
        (json.dumps({"choices": ["x"]}).encode(), "malformed reply: choices[0] is not an object"),
        (
            whole(message={"content": 42}, finish_reason="stop"),
            "malformed reply: choices[0].message.content is not text",
        ),
    ],
)
def test_a_body_that_ended_but_cannot_be_read_is_malformed(body: bytes, error: str) -> None:
    parsed = parse_reply(body, JSON)
    assert (parsed.incomplete, parsed.error) == (False, error)


def test_a_whole_answer_with_content_parts() -> None:
    body = whole(message={"content": [{"type": "text", "text": "def "}, {"type": "text", "text": "f(): ..."}]},
                 finish_reason="stop")  # fmt: skip
    parsed = parse_reply(body, JSON)
    assert (parsed.text, parsed.finish_reason, parsed.error, parsed.incomplete) == (
        "def f(): ...",
        "stop",
        None,
        False,
    )
