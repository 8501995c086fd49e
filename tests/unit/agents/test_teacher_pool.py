"""The teacher pool's choices and back-off, on a fake clock: no sockets, no sleeps."""

from __future__ import annotations

import re

import pytest

from heidi_engine.agents.teacher.client import OpenAITeacher
from heidi_engine.agents.teacher.endpoints import EndpointSampler
from heidi_engine.agents.teacher.pool import Endpoint, TeacherPool, endpoint_name, split_urls
from heidi_engine.agents.teacher.usage import TeacherUsage

A, B, C = "http://127.0.0.1:8001/v1", "http://127.0.0.1:8002/v1", "http://127.0.0.1:8003/v1"
ONE = TeacherUsage(requests_sent=1)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _pool(*urls: str, clock: Clock | None = None) -> TeacherPool:
    return TeacherPool(urls or (A, B, C), fail_threshold=2, backoff_base_s=1.0, backoff_max_s=4.0,
                       clock=clock or Clock())  # fmt: skip


def test_each_attempt_goes_to_the_endpoint_with_fewest_in_flight_ties_in_turn() -> None:
    pool = _pool()
    first = [pool.acquire().url for _ in range(3)]
    assert sorted(first) == [A, B, C]  # an idle pool is filled evenly
    b = pool.endpoints[1]
    pool.release(b, ONE, failed=False, latency_s=0.1)
    assert pool.acquire().url == B  # the only one with nothing in flight
    pool.release(pool.endpoints[0], ONE, failed=False)
    pool.release(pool.endpoints[2], ONE, failed=False)
    assert [e.in_flight for e in pool.endpoints] == [0, 1, 0]
    assert {pool.acquire().url, pool.acquire().url} == {A, C}


def test_an_endpoint_failing_repeatedly_is_out_for_a_growing_back_off_then_back() -> None:
    clock = Clock()
    pool = _pool(A, B, clock=clock)
    a = pool.endpoints[0]
    for _ in range(2):  # fail_threshold=2: the second failure in a row takes it out
        pool.release(_take(pool, a), ONE, failed=True)
    assert pool.report()[0].out_for_s == 1.0
    assert all(pool.acquire().url == B for _ in range(5))  # its work goes to the other
    clock.now += 1.0
    pool.release(_take(pool, a), ONE, failed=True)  # back, and fails again: twice as long
    assert pool.report()[0].out_for_s == 2.0
    clock.now += 2.0
    pool.release(_take(pool, a), ONE, failed=True)
    clock.now += 0.5
    assert pool.report()[0].out_for_s == 3.5  # 4 s, the cap
    clock.now += 3.5
    pool.release(_take(pool, a), ONE, failed=True)
    assert pool.report()[0].out_for_s == 4.0  # capped
    clock.now += 4.0
    pool.release(_take(pool, a), ONE, failed=False)  # a good reply resets it
    pool.release(_take(pool, a), ONE, failed=True)
    assert pool.report()[0].out_for_s == 0.0 and pool.report()[0].errors == 6


def _take(pool: TeacherPool, endpoint: Endpoint) -> Endpoint:
    """Acquire until ``endpoint`` is chosen (the others' in-flight counts are left as they are)."""
    for _ in range(10):
        chosen = pool.acquire()
        if chosen is endpoint:
            return chosen
    raise AssertionError(f"{endpoint} was never chosen")


def test_when_every_endpoint_is_out_the_one_back_first_is_chosen() -> None:
    clock = Clock()
    pool = _pool(A, B, clock=clock)
    a, b = pool.endpoints
    for endpoint in (b, b, b, a, a):  # b: out 2 s (its third failure), a: out 1 s
        endpoint.in_flight += 1
        pool.release(endpoint, ONE, failed=True)
    assert pool.acquire() is a
    assert pool.another_is_in(a) is False


def test_a_retry_avoids_the_endpoint_that_just_failed_it_while_another_is_in() -> None:
    pool = _pool(A, B)
    a = pool.endpoints[0]
    assert all(pool.acquire(avoid=a).url == B for _ in range(3))
    assert pool.another_is_in(a)
    single = _pool(A)
    assert single.acquire(avoid=single.endpoints[0]).url == A  # nowhere else to go


def test_report_keeps_usage_errors_and_latency_percentiles_per_endpoint() -> None:
    pool = _pool(A, B)
    a, b = pool.endpoints
    for latency in (0.1 * i for i in range(1, 21)):
        a.in_flight += 1
        pool.release(a, TeacherUsage(requests_sent=1, input_tokens=10, output_tokens=5), failed=False,
                     latency_s=latency)  # fmt: skip
    b.in_flight += 1
    pool.release(b, ONE, failed=True)
    pool.charge(b, TeacherUsage(retries=1))
    ra, rb = pool.report()
    assert ra.usage == TeacherUsage(requests_sent=20, input_tokens=200, output_tokens=100)
    assert ra.latency_p50_s == pytest.approx(1.0) and ra.latency_p95_s == pytest.approx(1.9)
    assert (rb.usage, rb.errors, rb.latency_p50_s) == (TeacherUsage(requests_sent=1, retries=1), 1, None)


def test_endpoint_names_carry_no_credentials_and_duplicates_are_refused() -> None:
    assert endpoint_name("https://user:sk-secret@gpu1.lan:8000/v1/?api_key=sk-x#f") == "https://gpu1.lan:8000/v1"
    assert endpoint_name("http://[::1]:8000/v1") == "http://[::1]:8000/v1"
    assert split_urls(f" {A} ,, {B} ") == [A, B]
    with pytest.raises(ValueError, match=re.escape(f"{A} is listed twice")):
        TeacherPool([A, A + "/"])


def test_the_sampler_sends_each_endpoints_growth_once_and_nothing_when_idle() -> None:
    pool = _pool(A, B)
    a, b = pool.endpoints
    sampler = EndpointSampler(pool.report, lambda usage: usage.input_tokens * 0.01)
    assert sampler.sample() is None
    a.in_flight += 1
    pool.release(a, TeacherUsage(requests_sent=1, input_tokens=100), failed=False, latency_s=0.2)
    first = sampler.sample()
    assert first is not None and list(first.endpoints) == [endpoint_name(A)]
    assert first.endpoints[endpoint_name(A)].usage == {"requests_sent": 1, "input_tokens": 100,
                                                       "estimated_cost_usd": 1.0}  # fmt: skip
    assert sampler.sample() is None
    b.in_flight += 1
    pool.release(b, ONE, failed=True)
    second = sampler.sample()
    assert second is not None and second.endpoints[endpoint_name(B)].errors == 1
    assert endpoint_name(A) not in second.endpoints


def test_a_retry_skips_the_wait_only_while_another_endpoint_is_doing_well() -> None:
    pool = _pool(A, B)
    a, b = pool.endpoints
    a.in_flight += 1
    pool.release(a, ONE, failed=True)
    assert pool.another_is_in(a)  # b has not failed: the retry goes there at once
    b.in_flight += 1
    pool.release(b, ONE, failed=True)
    assert not pool.another_is_in(a) and not pool.another_is_in(b)  # both struggling: retries wait
    b.in_flight += 1
    pool.release(b, ONE, failed=False)
    assert pool.another_is_in(a)


def test_a_teacher_names_the_endpoint_of_a_pool_that_carries_credentials() -> None:
    with pytest.raises(ValueError, match=r"base_url \(endpoint 2 of 2\) must not carry credentials") as refused:
        OpenAITeacher(f"{A},http://user:hunter2@127.0.0.1:8002/v1", "fake-teacher", None)
    assert "hunter2" not in str(refused.value)
