"""The HTTP teacher: an OpenAI-compatible chat-completions client for the generate stage.

Works against OpenAI, Anthropic's OpenAI-compatible endpoint, vLLM, llama.cpp server and Ollama
(anything that serves ``POST {base_url}/chat/completions``), over keep-alive httpx connections
(:mod:`.teacher_transport`: proxies and CA settings from the environment, a whole-request deadline).
``base_url`` may list several servers, comma-separated: each attempt goes to the one with the fewest
requests in flight, and one that keeps failing is taken out for a while (:mod:`.teacher_pool`); a
retry goes to another server at once when one is in, without the back-off wait.

Errors by kind (:attr:`TeacherError.kind`), decided by :meth:`OpenAITeacher.complete`:

- ``"fatal"``: nothing sent again can succeed, the stage must stop: HTTP 401/403/404, quota or billing
  errors (402, 429 ``insufficient_quota``), an untrusted TLS certificate, and the same HTTP 400 three times
  in a row. The reason carries the provider's own message.
- ``"transient"``: the retries ran out on HTTP 429, 408, 409, 5xx, connection errors or timeouts. Each
  wait is the server's ``retry-after-ms``, else its ``Retry-After``, else exponential backoff with jitter
  capped at ``backoff_max_s``; a wait that would push this call's total waiting past
  ``max_total_wait_s`` is not made. :meth:`OpenAITeacher.map` with ``on_outage`` parks on these instead of
  failing the job: it asks again, one probe every ``park_interval_s``, until the server answers.
- ``"sample"``: only this request failed: another 4xx, or a 200 reply that is malformed. The server
  answered; sending it again would only spend budget on the same answer.

A 400 refusing ``max_tokens``/``temperature`` switches the client to the reasoning-model form once
(:mod:`.teacher_request`) and is sent again at once. Every attempt is counted in :class:`TeacherUsage`,
failed and timed-out ones too. No message ever contains the API key.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Literal, TypeVar
from urllib.parse import urlsplit, urlunsplit

from heidi_engine.agents.teacher.pool import Endpoint, EndpointReport, TeacherPool, split_urls
from heidi_engine.agents.teacher.reply import ParsedReply, parse_reply, tokens_in
from heidi_engine.agents.teacher.request import (
    ProviderError,
    is_quota_error,
    is_reasoning_model,
    is_unsupported_parameter,
    provider_error,
    request_body,
    retry_after_s,
)
from heidi_engine.agents.teacher.transport import DeadlineExceeded, Reply, Transport, TransportError
from heidi_engine.agents.teacher.usage import TeacherUsage

__all__ = ["Completion", "OpenAITeacher", "Outage", "TeacherError", "TeacherUsage"]

T = TypeVar("T")
ErrorKind = Literal["fatal", "transient", "sample"]

_RETRYABLE_STATUS = frozenset({408, 409, 429})
_FATAL_STATUS = frozenset({401, 403, 404})
_REASON_MAX = 300
_SAME_400_FATAL = 3  # the same 400 this many times in a row: every request is wrong, not one sample


@dataclass(frozen=True)
class Completion:
    """One successful chat completion and what it cost, retries included.

    ``ttft_s`` (time to first token) is measured on streamed replies only; ``decode_s`` is the time
    from the first to the last byte of the successful attempt.
    """

    text: str
    usage: TeacherUsage
    model: str
    finish_reason: str | None
    ttft_s: float | None = None
    decode_s: float | None = None


class TeacherError(Exception):
    """A teacher call that failed for good; ``usage`` is what it spent, ``kind`` what to do about it."""

    def __init__(self, reason: str, usage: TeacherUsage, kind: ErrorKind = "sample") -> None:
        super().__init__(reason)
        self.reason = reason
        self.usage = usage
        self.kind: ErrorKind = kind


@dataclass(frozen=True)
class Outage:
    """What :meth:`OpenAITeacher.map` tells ``on_outage``: the teacher is unreachable, or back.

    ``state`` is "parked" when an outage starts, "waiting" on each failed probe, "recovered" when a
    request got through again; ``usage`` is what the failed attempts behind this notice spent.
    """

    state: Literal["parked", "waiting", "recovered"]
    since: str  # ISO 8601 UTC wall time the outage started
    retry_every_s: float
    reason: str
    usage: TeacherUsage
    jobs_waiting: int


def _utc_iso() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class OpenAITeacher:
    """Chat completions against one OpenAI-compatible endpoint or a pool of them, with retries, parking
    and concurrency."""

    def __init__(
        self,
        base_url: str | Sequence[str],
        model: str,
        api_key: str | None,
        *,
        timeout_s: float = 60.0,
        max_retries: int = 5,
        max_total_wait_s: float = 120.0,
        max_tokens: int = 512,
        temperature: float = 0.7,
        stream: bool = False,
        park_interval_s: float = 30.0,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        jitter: Callable[[], float] = random.random,
        pool_backoff_s: tuple[float, float] = (1.0, 60.0),
    ) -> None:
        urls = split_urls(base_url) if isinstance(base_url, str) else [u.strip() for u in base_url]
        if not urls:
            raise ValueError("base_url must name at least one http:// or https:// URL")
        for number, url in enumerate(urls, 1):
            which = f"base_url (endpoint {number} of {len(urls)})" if len(urls) > 1 else "base_url"
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"{which} must be an http:// or https:// URL with a host, got {url!r}")
            if parts.username is not None or parts.password is not None:
                raise ValueError(f"{which} must not carry credentials; pass the API key through its env variable")
        for name, value, strict in (
            ("timeout_s", timeout_s, True),
            ("park_interval_s", park_interval_s, True),
            ("max_total_wait_s", max_total_wait_s, False),
            ("backoff_base_s", backoff_base_s, False),
            ("backoff_max_s", backoff_max_s, False),
        ):
            if not (value > 0.0 if strict else value >= 0.0):  # written so that NaN fails too
                raise ValueError(f"{name} must be {'>' if strict else '>='} 0, got {value!r}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries!r}")
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {max_tokens!r}")
        if not model:
            raise ValueError("model must be a non-empty model name")
        self.base_url = ",".join(url.rstrip("/") for url in urls)
        self.model = model
        self._api_key = api_key or None
        self._timeout_s = timeout_s
        self._max_retries = max_retries
        self._max_total_wait_s = max_total_wait_s
        self._max_tokens = max_tokens
        self._temperature = temperature
        self._stream = stream
        self._park_interval_s = park_interval_s
        self._backoff_base_s = backoff_base_s
        self._backoff_max_s = backoff_max_s
        self._clock = clock
        self._sleep = sleep
        self._jitter = jitter
        self._lock = threading.Lock()
        self._reasoning = is_reasoning_model(model)
        self._last_400: tuple[str, int] = ("", 0)
        headers = {
            "Content-Type": "application/json",
            "Accept": "application/json, text/event-stream",
            "User-Agent": "autotrain-supervisor-teacher",
        }
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        self._pool = TeacherPool(
            urls, backoff_base_s=pool_backoff_s[0], backoff_max_s=pool_backoff_s[1], clock=clock
        )
        self._transports: list[Transport] = []
        try:
            for url in urls:
                parts = urlsplit(url)
                path = parts.path.rstrip("/") + "/chat/completions"
                self._transports.append(
                    Transport(urlunsplit((parts.scheme, parts.netloc, path, parts.query, "")), headers)
                )
        except BaseException:
            self.close()
            raise
        self._closed = False

    def __repr__(self) -> str:
        return f"OpenAITeacher(base_url={self.base_url!r}, model={self.model!r})"

    def __enter__(self) -> OpenAITeacher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def reasoning(self) -> bool:
        """True once requests use the reasoning-model form (by name, or after the provider asked for it)."""
        return self._reasoning

    def close(self) -> None:
        """Close every connection; calls still in flight fail with TeacherError("teacher closed")."""
        self._closed = True
        for transport in self._transports:
            transport.close()

    def endpoints(self) -> list[EndpointReport]:
        """What each endpoint was sent and how it answered since this client was made (credentials never
        part of a name)."""
        return self._pool.report()

    def complete(self, messages: list[dict[str, str]]) -> Completion:
        """One chat completion, retried as the module docstring describes; raises TeacherError."""
        _check_messages(messages)
        spent = TeacherUsage()
        waited = 0.0
        avoid: Endpoint | None = None
        while True:
            if self._closed:
                raise TeacherError("teacher closed", spent)
            reasoning = self._reasoning
            body = request_body(
                self.model,
                messages,
                max_tokens=self._max_tokens,
                temperature=self._temperature,
                reasoning=reasoning,
                stream=self._stream,
            )
            server_wait: float | None = None
            kind: ErrorKind
            endpoint = self._pool.acquire(avoid)
            try:
                reply = self._transports[endpoint.index].post(body, self._timeout_s)
            except DeadlineExceeded as exc:
                attempt = TeacherUsage(
                    requests_sent=1,
                    timed_out=1,
                    timed_out_input_max=len(body),
                    timed_out_output_max=self._max_tokens,
                )
                self._pool.release(endpoint, attempt, failed=True)
                spent += attempt
                failure, kind = exc.reason, "transient"
            except TransportError as exc:
                attempt = TeacherUsage(requests_sent=1)
                self._pool.release(endpoint, attempt, failed=not self._closed)
                spent += attempt
                if self._closed:
                    raise TeacherError("teacher closed", spent) from None
                failure, kind = exc.reason, "fatal" if exc.certificate else "transient"
            except BaseException:
                self._pool.release(endpoint, TeacherUsage(), failed=False)
                raise
            else:
                if reply.status == 200:
                    return self._completion(reply, spent, endpoint)
                error = provider_error(reply.body)
                attempt = TeacherUsage(requests_sent=1, rate_limits_hit=int(reply.status == 429))
                attempt += _error_tokens(reply.body)
                self._pool.release(endpoint, attempt, failed=reply.status >= 500)
                spent += attempt
                failure = f"HTTP {reply.status}" + (f": {error.message}" if error.message else "")
                if not reasoning and is_unsupported_parameter(reply.status, error):
                    with self._lock:
                        self._reasoning = True  # remembered: every later request uses the reasoning form
                    self._pool.charge(endpoint, TeacherUsage(retries=1))
                    spent += TeacherUsage(retries=1)
                    continue
                kind = self._kind_of(reply.status, error, failure)
                server_wait = retry_after_s(reply.headers)
            # Which server of a pool said it; kept apart from ``failure``, which compares 400s.
            failure_at = f"{failure} (at {endpoint.name})" if len(self._transports) > 1 else failure
            if kind != "transient":
                raise TeacherError(self._redact(failure_at), spent, kind)
            if spent.retries >= self._max_retries:
                raise TeacherError(
                    self._redact(f"{failure_at} (gave up after {spent.retries} retries)"), spent, kind
                )
            avoid = endpoint
            if self._pool.another_is_in(endpoint):
                self._pool.charge(endpoint, TeacherUsage(retries=1))
                spent += TeacherUsage(retries=1)  # another server takes it now: no reason to wait
                continue
            delay = server_wait if server_wait is not None else self._backoff(spent.retries)
            if waited + delay > self._max_total_wait_s:
                reason = (
                    f"{failure_at} (next wait {delay:.1f}s would exceed max_total_wait_s="
                    f"{self._max_total_wait_s:g}, already waited {waited:.1f}s)"
                )
                raise TeacherError(self._redact(reason), spent, kind)
            started = self._clock()
            self._sleep(delay)
            waited += max(delay, self._clock() - started)
            self._pool.charge(endpoint, TeacherUsage(retries=1))
            spent += TeacherUsage(retries=1)

    def _kind_of(self, status: int, error: ProviderError, failure: str) -> ErrorKind:
        if status in _FATAL_STATUS or is_quota_error(status, error):
            return "fatal"
        if status in _RETRYABLE_STATUS or status >= 500:
            return "transient"
        if status == 400:
            with self._lock:
                last, count = self._last_400
                self._last_400 = (failure, count + 1 if failure == last else 1)
                if self._last_400[1] >= _SAME_400_FATAL:
                    return "fatal"
        return "sample"

    def map(
        self,
        jobs: Iterable[T],
        build_messages: Callable[[T], list[dict[str, str]]],
        on_done: Callable[[T, Completion | TeacherError], None],
        *,
        concurrency: int,
        should_continue: Callable[[], bool] = lambda: True,
        on_outage: Callable[[Outage], None] | None = None,
    ) -> None:
        """Run ``jobs`` with at most ``concurrency`` requests in flight.

        ``jobs`` is pulled lazily, one job per free slot, and only after ``should_continue()`` said yes:
        once it says no, nothing new is sent, and the requests in flight finish and are delivered.
        ``build_messages``, ``on_done`` and ``on_outage`` run on the calling thread, one at a time, so
        callers need no locks. An exception from any of them stops submission and propagates once the
        requests in flight have finished.

        With ``on_outage``, a job that failed with a transient error is not delivered: it is kept, the
        map parks (one probe request every ``park_interval_s``, ``should_continue`` asked between
        waits so that a stop still lands) and the kept jobs are sent again once a request gets through.
        Jobs still kept when ``should_continue`` says no are neither done nor failed.
        """
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ValueError(f"concurrency must be an int >= 1, got {concurrency!r}")
        pending: dict[Future[Completion | TeacherError], tuple[T, list[dict[str, str]]]] = {}
        kept: deque[tuple[T, list[dict[str, str]]]] = deque()
        source = iter(jobs)
        exhausted = stopped = False
        outage: Outage | None = None
        next_probe = 0.0
        with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="teacher") as pool:
            while True:
                while not stopped and len(pending) < (1 if outage else concurrency):
                    if outage is not None and (pending or not self._wait_until(next_probe, should_continue)):
                        stopped = not pending
                        break
                    if not should_continue():
                        stopped = True
                        break
                    if kept:
                        item = kept.popleft()
                    elif exhausted:
                        break
                    else:
                        try:
                            job = next(source)
                        except StopIteration:
                            exhausted = True
                            break
                        item = (job, build_messages(job))
                    pending[pool.submit(self._complete_or_error, item[1])] = item
                if not pending:
                    return
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    item = pending.pop(future)
                    result = future.result()
                    if (
                        on_outage is not None
                        and isinstance(result, TeacherError)
                        and result.kind == "transient"
                    ):
                        kept.append(item)
                        state: Literal["parked", "waiting"] = "waiting" if outage else "parked"
                        since = outage.since if outage else _utc_iso()
                        outage = Outage(
                            state, since, self._park_interval_s, result.reason, result.usage, len(kept)
                        )
                        next_probe = self._clock() + self._park_interval_s
                        on_outage(outage)
                        continue
                    if outage is not None and on_outage is not None and isinstance(result, Completion):
                        on_outage(
                            Outage(
                                "recovered",
                                outage.since,
                                self._park_interval_s,
                                "",
                                TeacherUsage(),
                                len(kept),
                            )
                        )
                        outage = None
                    on_done(item[0], result)

    def _wait_until(self, when: float, should_continue: Callable[[], bool]) -> bool:
        """Wait for ``when`` on the injected clock in short steps; False as soon as told to stop."""
        while True:
            if not should_continue():
                return False
            left = when - self._clock()
            if left <= 0:
                return True
            self._sleep(min(left, 0.25))

    def _complete_or_error(self, messages: list[dict[str, str]]) -> Completion | TeacherError:
        try:
            return self.complete(messages)
        except TeacherError as exc:
            return exc

    def _completion(self, reply: Reply, spent: TeacherUsage, endpoint: Endpoint) -> Completion:
        try:
            parsed: ParsedReply = parse_reply(reply.body, reply.headers.get("content-type", ""))
        except BaseException:
            self._pool.release(endpoint, TeacherUsage(requests_sent=1), failed=False)
            raise
        tokens = parsed.tokens
        attempt = TeacherUsage(
            requests_sent=1,
            input_tokens=tokens.input_tokens,
            output_tokens=tokens.output_tokens,
            cached_input_tokens=tokens.cached_input_tokens,
            unmetered=int(not tokens.metered),
        )
        self._pool.release(endpoint, attempt, failed=False, latency_s=reply.elapsed_s)
        spent += attempt
        if parsed.error is not None or parsed.text is None:
            raise TeacherError(parsed.error or "malformed reply", spent)
        with self._lock:
            self._last_400 = ("", 0)
        streamed = reply.headers.get("content-type", "").startswith("text/event-stream")
        first = reply.first_byte_s
        return Completion(
            text=parsed.text,
            usage=spent,
            model=parsed.model or self.model,
            finish_reason=parsed.finish_reason,
            ttft_s=first if streamed else None,
            decode_s=reply.elapsed_s - first if first is not None else None,
        )

    def _backoff(self, retries_done: int) -> float:
        ceiling = min(self._backoff_max_s, self._backoff_base_s * (2.0**retries_done))
        # "Equal jitter": spreads synchronised workers apart but never waits less than half the step.
        return ceiling * (0.5 + 0.5 * min(1.0, max(0.0, self._jitter())))

    def _redact(self, reason: str) -> str:
        # Servers echo parts of a bad key back ("Incorrect API key provided: sk-..."): never pass it on.
        if self._api_key:
            reason = reason.replace(self._api_key, "[REDACTED]")
        return reason if len(reason) <= _REASON_MAX else reason[: _REASON_MAX - 3] + "..."


def _check_messages(messages: list[dict[str, str]]) -> None:
    if not isinstance(messages, list) or not messages:
        raise ValueError("messages must be a non-empty list of {'role': str, 'content': str} dicts")
    for i, message in enumerate(messages):
        if not (
            isinstance(message, dict)
            and isinstance(message.get("role"), str)
            and isinstance(message.get("content"), str)
        ):
            raise ValueError(f"messages[{i}] must be a dict with str 'role' and 'content'")


def _error_tokens(body: bytes) -> TeacherUsage:
    """Tokens an error reply says it billed (rare, but then they count)."""
    try:
        tokens = tokens_in(json.loads(body))
    except ValueError:
        return TeacherUsage()
    return TeacherUsage(
        input_tokens=tokens.input_tokens,
        output_tokens=tokens.output_tokens,
        cached_input_tokens=tokens.cached_input_tokens,
    )
