"""The HTTP teacher and replies that did not end properly, against the fake server on 127.0.0.1.

A cut reply is an incomplete attempt: retried like a transient failure (on an injected clock: no real
waiting), counted with the tokens it reported, failed as ``incomplete`` when the retries run out, and
never parked on, since the server did answer.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from fakes.openai_server import FakeOpenAIServer, ScriptItem
from harness import FakeClock, wait_until

from heidi_engine.agents.teacher.base import Completion, Outage, TeacherError
from heidi_engine.agents.teacher.client import OpenAITeacher
from heidi_engine.agents.teacher.usage import TeacherUsage

pytestmark = pytest.mark.timeout(30)

MESSAGES = [{"role": "user", "content": "add two ints"}]
SSE = "text/event-stream"
ROLE_ONLY = ("raw", SSE, b'data: {"choices":[{"delta":{"role":"assistant"}}]}\n\ndata: [DONE]\n\n')
NO_FINISH = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "def f(): pass"}}]}


def _teacher(url: str, **kwargs: Any) -> OpenAITeacher:
    clock = FakeClock()
    return OpenAITeacher(url, "gpt-4o-mini", None, clock=clock.time, sleep=clock.sleep, **kwargs)


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as srv:
        yield srv


@pytest.mark.parametrize(
    ("item", "stream", "why"),
    [
        (ROLE_ONLY, True, "no finish_reason"),
        (("cut", 300), True, "the stream ended before [DONE]"),
        (("cut", 40), False, "the body ends mid-JSON"),
        (("malformed",), False, "the body ends mid-JSON"),
        (
            ("json", {"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 0}}),
            False,
            "no choices",
        ),
        (("json", NO_FINISH), False, "no finish_reason"),
    ],
)
def test_a_cut_reply_is_asked_again_and_the_answer_that_ended_is_returned(
    server: FakeOpenAIServer, item: ScriptItem, stream: bool, why: str
) -> None:
    server.push(item)
    with _teacher(server.url, stream=stream, max_retries=1) as teacher:
        completion = teacher.complete(MESSAGES)
    assert completion.finish_reason == "stop" and completion.text.startswith("```python\ndef answer_")
    assert len(server.requests) == 2
    assert completion.usage.requests_sent == 2 and completion.usage.retries == 1
    # The fake counts a reply's usage once it has written it: a moment after the client read it.
    counted = (completion.usage.input_tokens, completion.usage.output_tokens)
    wait_until(lambda: server.usage_sent == counted, 5, 0.01, f"the server's usage to equal {counted}",
               lambda: f"the server sent {server.usage_sent}")  # fmt: skip
    with _teacher(server.url, stream=stream, max_retries=0) as teacher:
        server.push(item)
        with pytest.raises(TeacherError) as failure:
            teacher.complete(MESSAGES)
    assert failure.value.kind == "incomplete"
    assert failure.value.reason == f"incomplete reply: {why} (gave up after 0 retries)"


def test_cut_replies_are_failures_of_their_jobs_and_never_park_the_map(server: FakeOpenAIServer) -> None:
    server.push(ROLE_ONLY, ("slow", 0), ROLE_ONLY, ("slow", 0))
    outages: list[Outage] = []
    results: dict[int, Completion | TeacherError] = {}
    with _teacher(server.url, stream=True, max_retries=0) as teacher:
        teacher.map(
            range(4), lambda i: MESSAGES, results.__setitem__, concurrency=1, on_outage=outages.append
        )
    assert outages == []
    failed = sorted(job for job, result in results.items() if isinstance(result, TeacherError))
    assert failed == [0, 2] and all(results[job].kind == "incomplete" for job in failed)  # type: ignore[union-attr]
    assert len(server.requests) == 4


def test_a_pool_takes_a_server_that_keeps_cutting_replies_out(server: FakeOpenAIServer) -> None:
    with FakeOpenAIServer() as cutter:
        cutter.fallback = ROLE_ONLY
        with _teacher(f"{cutter.url},{server.url}", stream=True, max_retries=3) as teacher:
            for _ in range(4):
                assert teacher.complete(MESSAGES).finish_reason == "stop"
            reports = {report.name: report for report in teacher.endpoints()}
        cut, good = reports[cutter.url.rstrip("/")], reports[server.url.rstrip("/")]
        assert cut.errors == len(cutter.requests) >= 1 and cut.usage.requests_sent == len(cutter.requests)
        assert good.errors == 0 and len(server.requests) == 4


def test_a_single_attempt_is_one_request_whatever_the_failure(server: FakeOpenAIServer) -> None:
    server.push(("status", 503), ROLE_ONLY)
    with _teacher(server.url, stream=True, max_retries=5) as teacher:
        for kind in ("transient", "incomplete"):
            with pytest.raises(TeacherError) as failure:
                teacher._attempts.complete(MESSAGES, retries=False)
            assert failure.value.kind == kind
            assert failure.value.usage.as_delta() == TeacherUsage(requests_sent=1).as_delta()
    assert len(server.requests) == 2
    assert json.loads(server.requests[1].body)["stream"] is True
