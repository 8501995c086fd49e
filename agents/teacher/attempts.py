"""The HTTP teacher's transport loop: the attempts of one chat completion across a pool of endpoints.

Each attempt goes to the endpoint the pool chooses (:mod:`heidi_engine.agents.teacher.pool`), over that
endpoint's keep-alive transport (:mod:`heidi_engine.agents.teacher.transport`). What a failure means and
how long to wait before the next attempt is the retry policy's call
(:mod:`heidi_engine.agents.teacher.retry`); a retry goes to another server at once when one is in. Every
attempt is counted, failed and timed-out ones too, and with an intent log
(:mod:`heidi_engine.agents.teacher.intent`) written down before it is sent. A 200 reply that did not end
properly (:mod:`heidi_engine.agents.teacher.reply`) is an ``incomplete`` attempt, tried again like a
transient failure.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping, Sequence
from urllib.parse import urlsplit, urlunsplit

from heidi_engine.agents.teacher.base import Completion, ErrorKind, TeacherError
from heidi_engine.agents.teacher.intent import IntentLog
from heidi_engine.agents.teacher.pool import Endpoint, EndpointReport, TeacherPool
from heidi_engine.agents.teacher.reply import ParsedReply, parse_reply, tokens_in
from heidi_engine.agents.teacher.request import (
    is_unsupported_parameter,
    provider_error,
    request_body,
    retry_after_s,
)
from heidi_engine.agents.teacher.retry import RetryPolicy
from heidi_engine.agents.teacher.transport import DeadlineExceeded, Reply, Transport, TransportError
from heidi_engine.agents.teacher.usage import TeacherUsage

__all__ = ["AttemptLoop"]


class AttemptLoop:
    """Sends a chat completion attempt after attempt until a reply is read or the retry policy gives up;
    safe to share between worker threads."""

    def __init__(
        self,
        urls: Sequence[str],
        model: str,
        headers: Mapping[str, str],
        policy: RetryPolicy,
        *,
        timeout_s: float,
        max_tokens: int,
        temperature: float,
        stream: bool,
        reasoning: bool,
        clock: Callable[[], float],
        sleep: Callable[[float], None],
        pool_backoff_s: tuple[float, float],
        intents: IntentLog | None = None,
    ) -> None:
        self.model = model
        self._intents = intents
        self._policy = policy
        self._timeout_s = timeout_s
        self._max_tokens = max_tokens
        self._temperature = temperature
        self._stream = stream
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._reasoning = reasoning
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

    @property
    def reasoning(self) -> bool:
        """True once requests use the reasoning-model form (by name, or after the provider asked for it)."""
        return self._reasoning

    def close(self) -> None:
        """Close every connection; calls still in flight fail with TeacherError("teacher closed")."""
        self._closed = True
        for transport in self._transports:
            transport.close()

    def report(self) -> list[EndpointReport]:
        """What each endpoint was sent and how it answered."""
        return self._pool.report()

    def complete(self, messages: list[dict[str, str]], *, retries: bool = True) -> Completion:
        """One chat completion, retried as the policy says (``retries=False``: a single attempt, as a probe
        of a parked teacher is; a switch to the reasoning form still sends it again); raises TeacherError."""
        _check_messages(messages)
        spent = TeacherUsage()
        waited = 0.0
        avoid: Endpoint | None = None
        retry = False  # every attempt but the first is a retry
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
            # Written down before it leaves: a kill before its reply must not make it free.
            request_id = self._intents.sent(len(body), self._max_tokens, retry=retry) if self._intents else ""
            retry = True
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
                spent += self._landed(request_id, attempt)
                failure, kind = exc.reason, "transient"
            except TransportError as exc:
                attempt = TeacherUsage(requests_sent=1)
                self._pool.release(endpoint, attempt, failed=not self._closed)
                spent += self._landed(request_id, attempt)
                if self._closed:
                    raise TeacherError("teacher closed", spent) from None
                failure, kind = exc.reason, "fatal" if exc.certificate else "transient"
            except BaseException:
                self._pool.release(endpoint, TeacherUsage(), failed=False)
                raise
            else:
                if reply.status == 200:
                    parsed = self._parsed(reply, endpoint, request_id)
                    spent += self._usage_of(parsed)
                    if parsed.error is None and parsed.text is not None:
                        self._policy.succeeded()
                        return self._completion(reply, parsed, spent)
                    if not parsed.incomplete:
                        raise TeacherError(parsed.error or "malformed reply", spent)
                    failure, kind = parsed.error or "incomplete reply", "incomplete"
                else:
                    error = provider_error(reply.body)
                    attempt = TeacherUsage(requests_sent=1, rate_limits_hit=int(reply.status == 429))
                    attempt += _error_tokens(reply.body)
                    self._pool.release(endpoint, attempt, failed=reply.status >= 500)
                    spent += self._landed(request_id, attempt)
                    failure = f"HTTP {reply.status}" + (f": {error.message}" if error.message else "")
                    if not reasoning and is_unsupported_parameter(reply.status, error):
                        with self._lock:
                            self._reasoning = True  # remembered: every later request uses the reasoning form
                        self._pool.charge(endpoint, TeacherUsage(retries=1))
                        spent += TeacherUsage(retries=1)
                        continue
                    kind = self._policy.kind_of(reply.status, error, failure)
                    server_wait = retry_after_s(reply.headers)
            # Which server of a pool said it; kept apart from ``failure``, which compares 400s.
            failure_at = f"{failure} (at {endpoint.name})" if len(self._transports) > 1 else failure
            if not retries:
                raise TeacherError(self._policy.redact(failure_at), spent, kind)
            self._policy.stop_unless_retryable(failure_at, kind, spent)
            avoid = endpoint
            if self._pool.another_is_in(endpoint):
                self._pool.charge(endpoint, TeacherUsage(retries=1))
                spent += TeacherUsage(retries=1)  # another server takes it now: no reason to wait
                continue
            delay = self._policy.delay(server_wait, failure_at, kind, spent, waited)
            started = self._clock()
            self._sleep(delay)
            waited += max(delay, self._clock() - started)
            self._pool.charge(endpoint, TeacherUsage(retries=1))
            spent += TeacherUsage(retries=1)

    def _landed(self, request_id: str, attempt: TeacherUsage) -> TeacherUsage:
        """Record that the attempt is over (with an intent log); returns ``attempt``."""
        if self._intents is not None:
            self._intents.landed(request_id, attempt)
        return attempt

    @staticmethod
    def _usage_of(parsed: ParsedReply) -> TeacherUsage:
        tokens = parsed.tokens
        return TeacherUsage(
            requests_sent=1,
            input_tokens=tokens.input_tokens,
            output_tokens=tokens.output_tokens,
            cached_input_tokens=tokens.cached_input_tokens,
            unmetered=int(not tokens.metered),
        )

    def _parsed(self, reply: Reply, endpoint: Endpoint, request_id: str) -> ParsedReply:
        """The 200 reply read; the attempt released (a cut reply is the server's fault) and recorded."""
        try:
            parsed = parse_reply(reply.body, reply.headers.get("content-type", ""))
        except BaseException:
            self._pool.release(endpoint, TeacherUsage(requests_sent=1), failed=False)
            raise
        attempt = self._usage_of(parsed)
        good = parsed.error is None
        self._pool.release(
            endpoint, attempt, failed=parsed.incomplete, latency_s=reply.elapsed_s if good else None
        )
        self._landed(request_id, attempt)
        return parsed

    def _completion(self, reply: Reply, parsed: ParsedReply, spent: TeacherUsage) -> Completion:
        assert parsed.text is not None
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
