"""The HTTP teacher against behaviours of real providers, on a real local server (and proxy) on 127.0.0.1.

Proxies and CA bundles from the environment, the whole-request deadline, reasoning models, errors that
must stop the stage, an outage parked on an injected clock, usage that is missing, cached or streamed.
"""

from __future__ import annotations

import shutil
import ssl
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fakes.connect_proxy import ConnectProxy
from fakes.openai_server import FakeOpenAIServer

from heidi_engine.agents.teacher.base import Completion, Outage, TeacherError
from heidi_engine.agents.teacher.client import OpenAITeacher
from heidi_engine.agents.teacher.pricing import estimate_cost, load_price_table
from heidi_engine.agents.teacher.spend import Spend
from heidi_engine.agents.teacher.usage import TeacherUsage

pytestmark = pytest.mark.timeout(30)

MESSAGES = [{"role": "user", "content": "add two ints"}]
QUOTA = {
    "error": {
        "message": "You exceeded your current quota, please check your plan and billing details.",
        "type": "insufficient_quota",
        "code": "insufficient_quota",
    }
}
_PROXY_VARS = ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "NO_PROXY", "https_proxy", "http_proxy",
               "all_proxy", "no_proxy", "SSL_CERT_FILE", "SSL_CERT_DIR")  # fmt: skip


class FakeTime:
    """An injected clock whose sleep advances it instantly."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept = 0.0

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept += seconds
        self.now += seconds


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in _PROXY_VARS:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as srv:
        yield srv


@pytest.fixture
def make_teacher() -> Iterator[Callable[..., OpenAITeacher]]:
    made: list[OpenAITeacher] = []

    def make(url: str, model: str = "gpt-4o-mini", **kwargs: Any) -> OpenAITeacher:
        teacher = OpenAITeacher(url, model, "sk-test", **{"jitter": lambda: 1.0, **kwargs})
        made.append(teacher)
        return teacher

    yield make
    for teacher in made:
        teacher.close()


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    made = subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    return cert, key


# --- proxies, CA bundle, deadline ------------------------------------------------------------------------


def test_http_proxy_carries_the_traffic_and_no_proxy_bypasses_it(
    server: FakeOpenAIServer, make_teacher: Callable[..., OpenAITeacher], monkeypatch: pytest.MonkeyPatch
) -> None:
    with ConnectProxy() as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        assert make_teacher(server.url).complete(MESSAGES).text
        assert proxy.request_lines == [f"POST {server.url}/chat/completions HTTP/1.1"]
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        assert make_teacher(server.url).complete(MESSAGES).text
        assert len(proxy.request_lines) == 1  # the second teacher went direct
    assert len(server.requests) == 2


def test_https_through_a_connect_proxy_trusting_ssl_cert_file(
    certificate: tuple[Path, Path],
    make_teacher: Callable[..., OpenAITeacher],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cert, key = certificate
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)
    with FakeOpenAIServer(tls=tls) as server, ConnectProxy() as proxy:
        monkeypatch.setenv("HTTPS_PROXY", proxy.url)
        with pytest.raises(TeacherError) as untrusted:
            make_teacher(server.url).complete(MESSAGES)
        assert untrusted.value.kind == "fatal" and "SSL_CERT_FILE" in untrusted.value.reason
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))
        completion = make_teacher(server.url).complete(MESSAGES)
        port = server.url.split(":")[2].split("/")[0]
        assert proxy.request_lines == [f"CONNECT 127.0.0.1:{port} HTTP/1.1"] * 2
    assert completion.usage.requests_sent == 1


def test_a_dripped_reply_hits_the_whole_request_deadline(
    server: FakeOpenAIServer, make_teacher: Callable[..., OpenAITeacher]
) -> None:
    # 20 pieces 0.1 s apart: every read is quick, the whole reply takes 2 s, the deadline is 0.5 s.
    server.push(("drip", 0.1, 20))
    with pytest.raises(TeacherError) as failure:
        make_teacher(server.url, timeout_s=0.5, max_retries=0).complete(MESSAGES)
    assert failure.value.reason == "no complete reply within timeout_s=0.5 (gave up after 0 retries)"
    assert failure.value.kind == "transient"
    assert failure.value.usage.timed_out == 1 and failure.value.usage.requests_sent == 1


# --- model families and errors by kind -------------------------------------------------------------------


def test_a_reasoning_model_gets_max_completion_tokens_and_no_temperature(
    server: FakeOpenAIServer, make_teacher: Callable[..., OpenAITeacher]
) -> None:
    server.reasoning_only = True
    make_teacher(server.url, model="o3-mini", max_tokens=300).complete(MESSAGES)
    sent = server.requests[0].json()
    assert sent["max_completion_tokens"] == 300
    assert "max_tokens" not in sent and "temperature" not in sent
    assert len(server.requests) == 1


def test_unsupported_parameter_400_falls_back_once_then_succeeds(
    server: FakeOpenAIServer, make_teacher: Callable[..., OpenAITeacher]
) -> None:
    server.reasoning_only = True
    teacher = make_teacher(server.url, model="acme-thinker")  # no name rule knows it
    first = teacher.complete(MESSAGES)
    second = teacher.complete(MESSAGES)
    assert first.usage.requests_sent == 2 and first.usage.retries == 1
    assert second.usage.requests_sent == 1  # remembered
    assert teacher.reasoning
    assert [("max_tokens" in r.json(), "max_completion_tokens" in r.json()) for r in server.requests] == [
        (True, False),
        (False, True),
        (False, True),
    ]


def test_insufficient_quota_is_fatal_after_one_request(
    server: FakeOpenAIServer, make_teacher: Callable[..., OpenAITeacher]
) -> None:
    server.fallback = ("status", 429, {"Retry-After": "0"}, QUOTA)
    with pytest.raises(TeacherError) as failure:
        make_teacher(server.url).complete(MESSAGES)
    assert failure.value.kind == "fatal"
    assert failure.value.reason == f"HTTP 429: {QUOTA['error']['message']}"
    assert len(server.requests) == 1


def test_the_same_400_three_times_in_a_row_is_fatal(
    server: FakeOpenAIServer, make_teacher: Callable[..., OpenAITeacher]
) -> None:
    bad = {"error": {"message": "Invalid value for 'messages'", "type": "invalid_request_error"}}
    server.fallback = ("status", 400, {}, bad)
    teacher = make_teacher(server.url)
    kinds = []
    for _ in range(3):
        with pytest.raises(TeacherError) as failure:
            teacher.complete(MESSAGES)
        kinds.append(failure.value.kind)
    assert kinds == ["sample", "sample", "fatal"]
    assert "Invalid value for 'messages'" in failure.value.reason


def test_a_five_minute_outage_parks_then_completes_every_job(
    server: FakeOpenAIServer, make_teacher: Callable[..., OpenAITeacher]
) -> None:
    fake = FakeTime()
    back_at = fake.now + 300.0
    server.down = lambda: fake.now < back_at
    teacher = make_teacher(
        server.url, clock=fake.clock, sleep=fake.sleep, max_retries=3, max_total_wait_s=10.0,
        park_interval_s=30.0,
    )  # fmt: skip
    done: dict[int, Completion | TeacherError] = {}
    notices: list[Outage] = []
    teacher.map(range(8), lambda _i: MESSAGES, done.__setitem__, concurrency=4, on_outage=notices.append)

    assert sorted(done) == list(range(8))
    assert all(isinstance(r, Completion) for r in done.values()), done
    states = [n.state for n in notices]
    assert states[0] == "parked" and states[-1] == "recovered" and states.count("recovered") == 1
    assert set(states[1:-1]) <= {"waiting"}
    assert "HTTP 503" in notices[0].reason and notices[0].retry_every_s == 30.0
    assert fake.now >= back_at
    # While parked only one probe is in flight at a time: ~300 s / 30 s probes, not a storm of requests.
    failed_requests = sum(n.usage.requests_sent for n in notices)
    assert failed_requests + 8 == len(server.requests)
    assert failed_requests < 4 * 4 + 300 / 30 * 4


def test_stop_while_parked_leaves_the_kept_jobs_undone(
    server: FakeOpenAIServer, make_teacher: Callable[..., OpenAITeacher]
) -> None:
    fake = FakeTime()
    server.down = lambda: True
    teacher = make_teacher(server.url, clock=fake.clock, sleep=fake.sleep, max_retries=0, park_interval_s=5.0)
    done: list[int] = []
    notices: list[Outage] = []
    teacher.map(
        range(3), lambda _i: MESSAGES, lambda job, _r: done.append(job), concurrency=1,
        should_continue=lambda: fake.now < 1100.0, on_outage=notices.append,
    )  # fmt: skip
    assert done == []  # neither done nor failed: asked again by the next run
    assert notices[0].state == "parked" and notices[-1].jobs_waiting == 1


# --- usage and cost --------------------------------------------------------------------------------------


def test_a_reply_without_usage_makes_the_cost_unknown(
    server: FakeOpenAIServer, make_teacher: Callable[..., OpenAITeacher]
) -> None:
    server.push(("ok", "a", 10, 5), ("nousage", "b"))
    teacher = make_teacher(server.url)
    total = teacher.complete(MESSAGES).usage + teacher.complete(MESSAGES).usage
    assert total.unmetered == 1
    spend = Spend("gpt-4o-mini", load_price_table(), 512)
    assert spend.cost_of(total) is None
    assert spend.cost_of(TeacherUsage(input_tokens=10, output_tokens=5)) is not None


def test_cached_prompt_tokens_are_counted_and_priced_at_their_rate(
    server: FakeOpenAIServer, make_teacher: Callable[..., OpenAITeacher]
) -> None:
    server.push(("ok", "a", 1000, 100, 600))
    usage = make_teacher(server.url, model="gpt-4o").complete(MESSAGES).usage
    assert (usage.input_tokens, usage.cached_input_tokens, usage.output_tokens) == (1000, 600, 100)
    table = load_price_table()
    expected = (400 * 2.50 + 600 * 1.25 + 100 * 10.00) / 1e6
    assert Spend("gpt-4o", table, 512).cost_of(usage) == pytest.approx(expected)
    assert estimate_cost("gpt-4o", 1000, 100, table) != pytest.approx(expected)


def test_streamed_usage_equals_non_streamed_usage_for_the_same_replies(
    server: FakeOpenAIServer, make_teacher: Callable[..., OpenAITeacher]
) -> None:
    replies = [("ok", f"```python\ndef f{n}():\n    return {n}\n```", 20 + n, 9 + n, n) for n in range(4)]
    server.push(*replies, *replies)
    plain = [make_teacher(server.url).complete(MESSAGES) for _ in replies]
    streamed_teacher = make_teacher(server.url, stream=True)
    streamed = [streamed_teacher.complete(MESSAGES) for _ in replies]

    assert [c.usage for c in streamed] == [c.usage for c in plain]
    assert [c.text for c in streamed] == [c.text for c in plain]
    assert [c.finish_reason for c in streamed] == ["stop"] * 4
    assert all(c.ttft_s is not None for c in streamed) and all(c.ttft_s is None for c in plain)
    sent = server.requests[-1].json()
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
