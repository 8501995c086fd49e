"""The HTTP teacher against a real local HTTP server (tests/fakes/openai_server.py) on 127.0.0.1.

Waits between retries run on an injected clock and sleep wherever the test is about the policy, so the
suite needs no real waiting except for the one test that checks Retry-After in real time.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from email.utils import formatdate
from typing import Any

import pytest
from fakes.openai_server import FakeOpenAIServer

from heidi_engine.agents.teacher.base import Completion, TeacherError
from heidi_engine.agents.teacher.client import OpenAITeacher
from heidi_engine.agents.teacher.usage import TeacherUsage

pytestmark = pytest.mark.timeout(30)

KEY = "sk-test-SECRET-0123456789abcdef"
MESSAGES = [{"role": "system", "content": "You write python."}, {"role": "user", "content": "add two ints"}]


class FakeTime:
    """An injected clock whose sleep advances it instantly and records the requested waits."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as srv:
        yield srv


@pytest.fixture
def fake_time() -> FakeTime:
    return FakeTime()


@pytest.fixture
def make_teacher(fake_time: FakeTime) -> Iterator[Callable[..., OpenAITeacher]]:
    made: list[OpenAITeacher] = []

    def make(url: str, *, api_key: str | None = KEY, real_time: bool = False, **kwargs: Any) -> OpenAITeacher:
        if not real_time:
            kwargs = {"clock": fake_time.clock, "sleep": fake_time.sleep, "jitter": lambda: 1.0, **kwargs}
        teacher = OpenAITeacher(url, "gpt-4o-mini", api_key, **kwargs)
        made.append(teacher)
        return teacher

    yield make
    for teacher in made:
        teacher.close()


def _collect(
    teacher: OpenAITeacher, jobs: list[int], concurrency: int
) -> list[tuple[int, Completion | TeacherError]]:
    results: list[tuple[int, Completion | TeacherError]] = []
    teacher.map(
        jobs,
        lambda i: [{"role": "user", "content": " ".join(["word"] * (i + 1))}],
        lambda job, result: results.append((job, result)),
        concurrency=concurrency,
    )
    return results


def _total(usages: list[TeacherUsage]) -> TeacherUsage:
    total = TeacherUsage()
    for usage in usages:
        total += usage
    return total


# --- usage accounting ------------------------------------------------------------------------------------


def test_usage_counters_are_the_exact_sums_of_scripted_usage(
    server: FakeOpenAIServer, make_teacher: Callable[..., OpenAITeacher]
) -> None:
    scripted = [(11 * n + 3, 7 * n + 1) for n in range(12)]
    server.push(*[("ok", f"reply {n}", p, c) for n, (p, c) in enumerate(scripted)])
    results = _collect(make_teacher(server.url), list(range(12)), concurrency=4)

    completions = [r for _, r in results]
    assert all(isinstance(r, Completion) for r in completions)
    total = _total([r.usage for r in completions])
    assert total == TeacherUsage(
        requests_sent=12,
        input_tokens=sum(p for p, _ in scripted),
        output_tokens=sum(c for _, c in scripted),
    )
    assert total.as_delta() == {
        "requests_sent": 12,
        "input_tokens": sum(p for p, _ in scripted),
        "output_tokens": sum(c for _, c in scripted),
        "rate_limits_hit": 0,
        "retries": 0,
    }
    assert sorted(job for job, _ in results) == list(range(12))


def test_usage_matches_what_the_server_reported_including_retried_calls(
    server: FakeOpenAIServer, make_teacher: Callable[..., OpenAITeacher]
) -> None:
    server.push(("status", 429, {"Retry-After": "0"}), ("status", 503), ("status", 500))
    results = _collect(make_teacher(server.url), list(range(20)), concurrency=5)

    total = _total([r.usage for _, r in results])
    assert (total.input_tokens, total.output_tokens) == server.usage_sent
    assert total.requests_sent == len(server.requests) == 23
    assert total.retries == 3
    assert total.rate_limits_hit == 1


def test_request_shape_path_prefix_and_authorization(
    server: FakeOpenAIServer, make_teacher: Callable[..., OpenAITeacher]
) -> None:
    teacher = make_teacher(server.url + "/", max_tokens=77, temperature=0.2)
    completion = teacher.complete(MESSAGES)
    anonymous = make_teacher(server.url, api_key=None)
    anonymous.complete(MESSAGES)

    first, second = server.requests
    assert first.path == second.path == "/v1/chat/completions"
    assert first.headers["authorization"] == f"Bearer {KEY}"
    assert "authorization" not in second.headers
    assert first.json() == {
        "model": "gpt-4o-mini",
        "messages": MESSAGES,
        "max_tokens": 77,
        "temperature": 0.2,
    }
    assert completion.text.startswith("```python")
    assert completion.model == "fake-teacher"
    assert completion.finish_reason == "stop"


def test_keep_alive_connections_are_reused_across_calls_and_maps(
    server: FakeOpenAIServer, make_teacher: Callable[..., OpenAITeacher]
) -> None:
    teacher = make_teacher(server.url)
    _collect(teacher, list(range(8)), concurrency=2)
    _collect(teacher, list(range(8)), concurrency=2)
    assert len({r.client_port for r in server.requests}) <= 2


def test_a_connection_the_server_closed_while_idle_is_replaced_without_a_retry(
    server: FakeOpenAIServer, make_teacher: Callable[..., OpenAITeacher]
) -> None:
    teacher = make_teacher(server.url)
    teacher.complete(MESSAGES)
    server.drop_connections()
    assert server.wait_for(lambda s: s.open_connections == 0)

    completion = teacher.complete(MESSAGES)
    assert completion.usage == TeacherUsage(
        requests_sent=1,
        input_tokens=completion.usage.input_tokens,
        output_tokens=completion.usage.output_tokens,
    )
    assert len(server.requests) == 2


# --- retries, Retry-After and backoff --------------------------------------------------------------------


def test_retry_after_seconds_is_honoured_on_the_injected_clock(
    server: FakeOpenAIServer, make_teacher: Callable[..., OpenAITeacher], fake_time: FakeTime
) -> None:
    server.push(("status", 429, {"Retry-After": "1"}), ("ok", "done", 5, 6))
    start = fake_time.now
    completion = make_teacher(server.url).complete(MESSAGES)

    assert fake_time.now - start >= 1.0
    assert fake_time.sleeps == [1.0]
    assert completion.text == "done"
    assert completion.usage == TeacherUsage(
        requests_sent=2, input_tokens=5, output_tokens=6, rate_limits_hit=1, retries=1
    )


def test_retry_after_ms_wins_over_retry_after(
    server: FakeOpenAIServer, make_teacher: Callable[..., OpenAITeacher], fake_time: FakeTime
) -> None:
    server.push(("status", 429, {"retry-after-ms": "250", "Retry-After": "7"}))
    make_teacher(server.url).complete(MESSAGES)
    assert fake_time.sleeps == [0.25]


def test_retry_after_as_an_http_date(
    server: FakeOpenAIServer, make_teacher: Callable[..., OpenAITeacher], fake_time: FakeTime
) -> None:
    server.push(("status", 503, {"Retry-After": formatdate(time.time() + 30, usegmt=True)}))
    make_teacher(server.url).complete(MESSAGES)
    assert len(fake_time.sleeps) == 1
    assert 27.0 < fake_time.sleeps[0] <= 30.0


def test_retry_after_is_honoured_in_real_time(
    server: FakeOpenAIServer, make_teacher: Callable[..., OpenAITeacher]
) -> None:
    server.push(("status", 429, {"Retry-After": "1"}))
    completion = make_teacher(server.url, real_time=True).complete(MESSAGES)

    first, second = server.requests
    assert second.arrived_at - first.arrived_at >= 1.0
    assert completion.usage.rate_limits_hit == 1
    assert completion.usage.retries == 1


def test_server_errors_are_retried_with_capped_exponential_backoff(
    server: FakeOpenAIServer, make_teacher: Callable[..., OpenAITeacher], fake_time: FakeTime
) -> None:
    server.push(("status", 500), ("status", 502), ("status", 503), ("status", 504), ("ok", "fine", 2, 3))
    completion = make_teacher(server.url, backoff_base_s=0.5, backoff_max_s=1.5).complete(MESSAGES)

    assert fake_time.sleeps == [0.5, 1.0, 1.5, 1.5]
    assert completion.usage == TeacherUsage(requests_sent=5, input_tokens=2, output_tokens=3, retries=4)


def test_jitter_spreads_the_backoff_between_half_and_full_step(
    server: FakeOpenAIServer, make_teacher: Callable[..., OpenAITeacher], fake_time: FakeTime
) -> None:
    server.push(("status", 500), ("status", 500))
    make_teacher(server.url, backoff_base_s=2.0, jitter=lambda: 0.0).complete(MESSAGES)
    assert fake_time.sleeps == [1.0, 2.0]


@pytest.mark.parametrize("status", [408, 409])
def test_timeout_and_conflict_statuses_are_retried(
    server: FakeOpenAIServer, make_teacher: Callable[..., OpenAITeacher], status: int
) -> None:
    server.push(("status", status))
    assert make_teacher(server.url).complete(MESSAGES).usage.retries == 1


def test_persistent_500_fails_after_max_retries_with_usage_counted(
    server: FakeOpenAIServer, make_teacher: Callable[..., OpenAITeacher], fake_time: FakeTime
) -> None:
    usage_on_error = {"usage": {"prompt_tokens": 4, "completion_tokens": 0}}
    server.push(*[("status", 500, {}, usage_on_error)] * 10)
    with pytest.raises(TeacherError) as failure:
        make_teacher(server.url, max_retries=3).complete(MESSAGES)

    assert failure.value.usage == TeacherUsage(requests_sent=4, input_tokens=16, retries=3)
    assert "HTTP 500" in failure.value.reason
    assert "3 retries" in failure.value.reason
    assert len(server.requests) == 4
    assert len(fake_time.sleeps) == 3


def test_a_wait_past_max_total_wait_gives_up_before_sleeping(
    server: FakeOpenAIServer, make_teacher: Callable[..., OpenAITeacher], fake_time: FakeTime
) -> None:
    server.push(("status", 429, {"Retry-After": "100"}))
    with pytest.raises(TeacherError) as failure:
        make_teacher(server.url, max_total_wait_s=10).complete(MESSAGES)
    assert fake_time.sleeps == []
    assert failure.value.usage == TeacherUsage(requests_sent=1, rate_limits_hit=1)
    assert "max_total_wait_s" in failure.value.reason


def test_total_wait_is_capped_across_retries(
    server: FakeOpenAIServer, make_teacher: Callable[..., OpenAITeacher], fake_time: FakeTime
) -> None:
    server.push(*[("status", 429, {"Retry-After": "4"})] * 5)
    with pytest.raises(TeacherError) as failure:
        make_teacher(server.url, max_total_wait_s=10).complete(MESSAGES)
    assert fake_time.sleeps == [4.0, 4.0]
    assert failure.value.usage == TeacherUsage(requests_sent=3, rate_limits_hit=3, retries=2)


@pytest.mark.parametrize("status", [400, 401, 403, 404])
def test_client_errors_are_not_retried_and_never_leak_the_key(
    server: FakeOpenAIServer, make_teacher: Callable[..., OpenAITeacher], fake_time: FakeTime, status: int
) -> None:
    echo = {"error": {"message": f"Incorrect API key provided: {KEY}. Find your key at https://x"}}
    server.push(("status", status, {}, echo))
    teacher = make_teacher(server.url)
    with pytest.raises(TeacherError) as failure:
        teacher.complete(MESSAGES)

    error = failure.value
    assert error.usage == TeacherUsage(requests_sent=1)
    assert fake_time.sleeps == []
    assert f"HTTP {status}" in error.reason
    assert "Incorrect API key provided" in error.reason
    for text in (str(error), repr(error), error.reason, repr(error.usage), repr(teacher), str(error.args)):
        assert KEY not in text


def test_connection_errors_are_retried_then_reported_without_the_key(
    make_teacher: Callable[..., OpenAITeacher], fake_time: FakeTime
) -> None:
    with socket.socket() as probe:  # a port nobody listens on once the probe is closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(TeacherError) as failure:
        make_teacher(f"http://127.0.0.1:{port}/v1", max_retries=2).complete(MESSAGES)

    assert failure.value.usage == TeacherUsage(requests_sent=3, retries=2)
    assert "connection error" in failure.value.reason
    assert KEY not in repr(failure.value)
    assert len(fake_time.sleeps) == 2


def test_a_dropped_connection_is_retried(
    server: FakeOpenAIServer, make_teacher: Callable[..., OpenAITeacher]
) -> None:
    server.push(("drop",), ("ok", "after drop", 1, 1))
    completion = make_teacher(server.url).complete(MESSAGES)
    assert completion.text == "after drop"
    assert completion.usage.retries == 1


def test_a_reply_slower_than_the_timeout_is_retried(
    server: FakeOpenAIServer, make_teacher: Callable[..., OpenAITeacher]
) -> None:
    server.push(("slow", 1.0), ("ok", "in time", 1, 2))
    completion = make_teacher(server.url, timeout_s=0.2).complete(MESSAGES)
    assert completion.text == "in time"
    assert completion.usage.as_delta() == TeacherUsage(
        requests_sent=2, input_tokens=1, output_tokens=2, retries=1
    ).as_delta()
    assert completion.usage.timed_out == 1  # the abandoned attempt may be billed: it is counted
    assert completion.usage.timed_out_output_max == 512


def test_persistently_slow_replies_fail_with_a_timeout(
    server: FakeOpenAIServer, make_teacher: Callable[..., OpenAITeacher]
) -> None:
    server.push(("slow", 1.0), ("slow", 1.0))
    with pytest.raises(TeacherError) as failure:
        make_teacher(server.url, timeout_s=0.2, max_retries=1).complete(MESSAGES)
    assert "timeout_s=0.2" in failure.value.reason
    assert failure.value.usage.as_delta() == TeacherUsage(requests_sent=2, retries=1).as_delta()
    assert failure.value.usage.timed_out == 2
    assert failure.value.kind == "transient"


# --- malformed replies -----------------------------------------------------------------------------------


def test_malformed_json_fails_only_that_job_in_a_map(
    server: FakeOpenAIServer, make_teacher: Callable[..., OpenAITeacher]
) -> None:
    # A whole body that is not JSON (a proxy's page): the reply ended, it is unreadable; not a cut one.
    garbage = ("raw", "application/json", b"<html><body>502 Bad Gateway</body></html>")
    server.push(("ok", "a", 1, 1), garbage, *[("ok", "b", 1, 1)] * 4)
    caller = threading.get_ident()
    delivered_on: set[int] = set()
    results: list[tuple[int, Completion | TeacherError]] = []

    def on_done(job: int, result: Completion | TeacherError) -> None:
        delivered_on.add(threading.get_ident())
        results.append((job, result))

    make_teacher(server.url).map(range(6), lambda i: MESSAGES, on_done, concurrency=3)

    failures = [r for _, r in results if isinstance(r, TeacherError)]
    assert len(failures) == 1
    assert "malformed" in failures[0].reason
    assert failures[0].usage == TeacherUsage(requests_sent=1, unmetered=1)  # not retried; cost unknown
    assert sum(isinstance(r, Completion) for _, r in results) == 5
    assert sorted(job for job, _ in results) == list(range(6))
    assert delivered_on == {caller}
    assert len(server.requests) == 6


def test_a_reply_without_choices_is_incomplete_retried_and_its_usage_counts(
    server: FakeOpenAIServer, make_teacher: Callable[..., OpenAITeacher]
) -> None:
    empty = ("json", {"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 0}})
    server.push(empty, empty)
    with pytest.raises(TeacherError) as failure:
        make_teacher(server.url, max_retries=1).complete(MESSAGES)
    assert failure.value.reason == "incomplete reply: no choices (gave up after 1 retries)"
    assert failure.value.kind == "incomplete"
    assert failure.value.usage == TeacherUsage(requests_sent=2, input_tokens=18, retries=1)
    assert len(server.requests) == 2


# --- concurrency and flow control ------------------------------------------------------------------------


def test_concurrency_is_reached_and_not_exceeded(make_teacher: Callable[..., OpenAITeacher]) -> None:
    with FakeOpenAIServer(latency_s=0.3) as slow_server:
        started = time.monotonic()
        results = _collect(make_teacher(slow_server.url), list(range(16)), concurrency=8)
        elapsed = time.monotonic() - started
        assert slow_server.max_in_flight == 8
        assert len({r.client_port for r in slow_server.requests}) <= 8
    assert len(results) == 16
    assert elapsed < 16 * 0.3 / 2  # far from serial


def test_should_continue_stops_submission_at_the_next_job(
    server: FakeOpenAIServer, make_teacher: Callable[..., OpenAITeacher]
) -> None:
    pulled: list[int] = []

    def jobs() -> Iterator[int]:
        for i in range(50):
            pulled.append(i)
            yield i

    done: list[int] = []
    make_teacher(server.url).map(
        jobs(),
        lambda i: MESSAGES,
        lambda job, _: done.append(job),
        concurrency=1,
        should_continue=lambda: len(done) < 3,
    )
    assert done == [0, 1, 2]
    assert pulled == [0, 1, 2]
    assert len(server.requests) == 3


def test_should_continue_lets_in_flight_requests_finish(
    server: FakeOpenAIServer, make_teacher: Callable[..., OpenAITeacher]
) -> None:
    done: list[int] = []
    make_teacher(server.url).map(
        range(50),
        lambda i: MESSAGES,
        lambda job, _: done.append(job),
        concurrency=4,
        should_continue=lambda: len(done) < 3,
    )
    assert 3 <= len(done) <= 3 + 4 - 1
    assert len(done) == len(set(done)) == len(server.requests)


def test_an_exception_in_on_done_propagates_after_in_flight_requests(
    server: FakeOpenAIServer, make_teacher: Callable[..., OpenAITeacher]
) -> None:
    def on_done(job: int, result: Completion | TeacherError) -> None:
        raise RuntimeError(f"boom on {job}")

    with pytest.raises(RuntimeError, match="boom on"):
        make_teacher(server.url).map(range(10), lambda i: MESSAGES, on_done, concurrency=2)
    assert len(server.requests) <= 2


def test_close_fails_a_call_in_flight_promptly(make_teacher: Callable[..., OpenAITeacher]) -> None:
    with FakeOpenAIServer(latency_s=1.5) as slow_server:
        teacher = make_teacher(slow_server.url)
        outcome: list[BaseException | Completion] = []

        def call() -> None:
            try:
                outcome.append(teacher.complete(MESSAGES))
            except TeacherError as exc:
                outcome.append(exc)

        worker = threading.Thread(target=call)
        worker.start()
        assert slow_server.wait_for_requests(1)
        started = time.monotonic()
        teacher.close()
        worker.join(2.0)
        assert not worker.is_alive()
        assert time.monotonic() - started < 1.0
    assert isinstance(outcome[0], TeacherError)
    assert outcome[0].reason == "teacher closed"


# --- bad input -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "needle"),
    [
        ("ftp://host/v1", "http:// or https://"),
        ("localhost:8000", "http:// or https://"),
        ("http://u:p@h/v1", "credentials"),
    ],
)
def test_bad_base_urls_are_rejected(url: str, needle: str) -> None:
    with pytest.raises(ValueError, match=needle) as failure:
        OpenAITeacher(url, "m", KEY)
    assert "u:p" not in str(failure.value)


def test_bad_arguments_name_the_field(
    server: FakeOpenAIServer, make_teacher: Callable[..., OpenAITeacher]
) -> None:
    with pytest.raises(ValueError, match="max_retries"):
        OpenAITeacher(server.url, "m", None, max_retries=-1)
    with pytest.raises(ValueError, match="timeout_s"):
        OpenAITeacher(server.url, "m", None, timeout_s=0)
    teacher = make_teacher(server.url)
    with pytest.raises(ValueError, match="concurrency"):
        teacher.map([1], lambda i: MESSAGES, lambda job, r: None, concurrency=0)
    with pytest.raises(ValueError, match=r"messages\[1\]"):
        teacher.complete([{"role": "user", "content": "x"}, {"role": "user"}])
    assert server.requests == []
