"""The HTTP teacher: an OpenAI-compatible chat-completions client for the generate stage.

Works against OpenAI, vLLM, llama.cpp server and Ollama (anything that serves
``POST {base_url}/chat/completions``). Standard library only: each worker thread borrows one keep-alive
``http.client`` connection from a small pool, so ``concurrency`` requests are in flight at once.

Retry policy of :meth:`OpenAITeacher.complete`:

- retried: HTTP 429, 408, 409 and 5xx, connection errors and timeouts. The wait is the server's
  ``retry-after-ms`` header, else its ``Retry-After`` (seconds or an HTTP date), else exponential backoff
  with jitter capped at ``backoff_max_s``. A retry whose wait would push the total waiting of this call
  past ``max_total_wait_s`` is not made: the call fails instead.
- not retried: other 4xx (a bad key or a bad request will not get better), TLS certificate errors, and a
  200 reply that is malformed JSON or has no usable ``choices``: the server answered that request, and
  sending it again would only spend budget on the same answer. That one sample fails; the stage goes on.

Every attempt is counted in :class:`TeacherUsage`, failed ones too, and :class:`TeacherError` carries
what was spent before giving up. No message ever contains the API key.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import random
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, fields
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar
from urllib.parse import urlsplit

__all__ = ["Completion", "OpenAITeacher", "TeacherError", "TeacherUsage"]

T = TypeVar("T")

_RETRYABLE_STATUS = frozenset({408, 409, 429})
_REASON_MAX = 200
_Connection = http.client.HTTPConnection  # HTTPSConnection is a subclass


@dataclass(frozen=True)
class TeacherUsage:
    """What teacher calls spent; added up across attempts, samples and batches."""

    requests_sent: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    rate_limits_hit: int = 0
    retries: int = 0

    def __add__(self, other: TeacherUsage) -> TeacherUsage:
        if not isinstance(other, TeacherUsage):
            return NotImplemented
        return TeacherUsage(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    def as_delta(self) -> dict[str, int]:
        """All five counters by name, ready for an event's ``usage_delta``."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class Completion:
    """One successful chat completion and what it cost, retries included."""

    text: str
    usage: TeacherUsage
    model: str
    finish_reason: str | None


class TeacherError(Exception):
    """A teacher call that failed for good; ``usage`` is what it spent before failing."""

    def __init__(self, reason: str, usage: TeacherUsage) -> None:
        super().__init__(reason)
        self.reason = reason
        self.usage = usage


@dataclass(frozen=True)
class _Reply:
    status: int
    headers: Mapping[str, str]  # lower-case names
    body: bytes


class _ConnectionPool:
    """Idle keep-alive connections, lent to one thread at a time and reused across ``map`` calls."""

    def __init__(self, factory: Callable[[], _Connection]) -> None:
        self._factory = factory
        self._lock = threading.Lock()
        self._idle: list[_Connection] = []
        self._all: set[_Connection] = set()
        self._closed = False

    def acquire(self) -> _Connection:
        with self._lock:
            if self._closed:
                raise ConnectionAbortedError("teacher closed")
            while self._idle:
                conn = self._idle.pop()
                if not _server_closed(conn):
                    return conn
                conn.close()
                self._all.discard(conn)
            conn = self._factory()
            self._all.add(conn)
            return conn

    def release(self, conn: _Connection) -> None:
        with self._lock:
            if not self._closed:
                self._idle.append(conn)
                return
        conn.close()

    def discard(self, conn: _Connection) -> None:
        conn.close()
        with self._lock:
            self._all.discard(conn)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            conns, self._all, self._idle = self._all, set(), []
        for conn in conns:
            # shutdown() wakes a thread blocked reading this socket; close() alone would not.
            if conn.sock is not None:
                with contextlib.suppress(OSError):
                    conn.sock.shutdown(socket.SHUT_RDWR)
            conn.close()


def _server_closed(conn: _Connection) -> bool:
    """True when an idle connection has pending EOF (or stray bytes): the server dropped it.

    vLLM's uvicorn, for one, closes keep-alive connections after 5 idle seconds; reusing such a socket
    would fail the next request and count a spurious retry.
    """
    sock = conn.sock
    if sock is None:
        return False  # http.client reconnects by itself
    try:
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        return bool(poller.poll(0))
    except (OSError, ValueError):
        return True


def _retry_after_s(headers: Mapping[str, str]) -> float | None:
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


def _usage_in(payload: object) -> TeacherUsage:
    usage = payload.get("usage") if isinstance(payload, dict) else None
    if not isinstance(usage, dict):
        return TeacherUsage()

    def count(key: str) -> int:
        value = usage.get(key)
        return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0

    return TeacherUsage(input_tokens=count("prompt_tokens"), output_tokens=count("completion_tokens"))


def _message_text(content: object) -> str | None:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # some servers answer with content parts
        parts = [p.get("text") for p in content if isinstance(p, dict)]
        if parts and all(isinstance(p, str) for p in parts):
            return "".join(str(p) for p in parts)
    return None


def _error_detail(body: bytes) -> str:
    try:
        payload = json.loads(body)
    except ValueError:
        return ""
    error = payload.get("error") if isinstance(payload, dict) else None
    message = error.get("message") if isinstance(error, dict) else error
    return f": {message}" if isinstance(message, str) and message else ""


def _transport_reason(exc: BaseException, timeout_s: float) -> str:
    if isinstance(exc, TimeoutError):
        return f"no reply within timeout_s={timeout_s:g}"
    detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else ""
    return f"connection error: {type(exc).__name__}" + (f" ({detail})" if detail else "")


class OpenAITeacher:
    """Chat completions against one OpenAI-compatible endpoint, with retries and concurrency."""

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None,
        *,
        timeout_s: float = 60.0,
        max_retries: int = 5,
        max_total_wait_s: float = 120.0,
        max_tokens: int = 512,
        temperature: float = 0.7,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"base_url must be an http:// or https:// URL with a host, got {base_url!r}")
        if parts.username is not None or parts.password is not None:
            raise ValueError("base_url must not carry credentials; pass the API key through its env variable")
        for name, value, strict in (
            ("timeout_s", timeout_s, True),
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
        self.base_url = base_url.rstrip("/")
        self.model = model
        self._api_key = api_key or None
        self._timeout_s = timeout_s
        self._max_retries = max_retries
        self._max_total_wait_s = max_total_wait_s
        self._max_tokens = max_tokens
        self._temperature = temperature
        self._backoff_base_s = backoff_base_s
        self._backoff_max_s = backoff_max_s
        self._clock = clock
        self._sleep = sleep
        self._jitter = jitter
        self._path = parts.path.rstrip("/") + "/chat/completions" + (f"?{parts.query}" if parts.query else "")
        self._headers = {
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": "autotrain-supervisor-teacher",
        }
        if self._api_key:
            self._headers["Authorization"] = f"Bearer {self._api_key}"
        self._host = parts.hostname
        self._port = parts.port
        self._tls = ssl.create_default_context() if parts.scheme == "https" else None
        self._pool = _ConnectionPool(self._connect)
        self._closed = False

    def __repr__(self) -> str:
        return f"OpenAITeacher(base_url={self.base_url!r}, model={self.model!r})"

    def __enter__(self) -> OpenAITeacher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close every connection; calls still in flight fail with TeacherError("teacher closed")."""
        self._closed = True
        self._pool.close()

    def _connect(self) -> _Connection:
        if self._tls is not None:
            return http.client.HTTPSConnection(
                self._host, self._port, timeout=self._timeout_s, context=self._tls
            )
        return http.client.HTTPConnection(self._host, self._port, timeout=self._timeout_s)

    def complete(self, messages: list[dict[str, str]]) -> Completion:
        """One chat completion, retried as the module docstring describes; raises TeacherError."""
        body = self._encode(messages)
        spent = TeacherUsage()
        waited = 0.0
        while True:
            if self._closed:
                raise TeacherError("teacher closed", spent)
            try:
                reply = self._send(body)
            except (OSError, http.client.HTTPException) as exc:
                spent += TeacherUsage(requests_sent=1)
                if self._closed:
                    raise TeacherError("teacher closed", spent) from None
                failure = _transport_reason(exc, self._timeout_s)
                retryable = not isinstance(exc, ssl.SSLCertVerificationError)
                server_wait = None
            else:
                if reply.status == 200:
                    return self._completion(reply.body, spent + TeacherUsage(requests_sent=1))
                limited = reply.status == 429
                spent += TeacherUsage(requests_sent=1, rate_limits_hit=int(limited))
                spent += _usage_in(self._json_or_none(reply.body))
                failure = f"HTTP {reply.status}{_error_detail(reply.body)}"
                retryable = reply.status in _RETRYABLE_STATUS or reply.status >= 500
                server_wait = _retry_after_s(reply.headers)
            if not retryable:
                raise TeacherError(self._redact(failure), spent)
            if spent.retries >= self._max_retries:
                raise TeacherError(self._redact(f"{failure} (gave up after {spent.retries} retries)"), spent)
            delay = server_wait if server_wait is not None else self._backoff(spent.retries)
            if waited + delay > self._max_total_wait_s:
                reason = (
                    f"{failure} (next wait {delay:.1f}s would exceed max_total_wait_s="
                    f"{self._max_total_wait_s:g}, already waited {waited:.1f}s)"
                )
                raise TeacherError(self._redact(reason), spent)
            started = self._clock()
            self._sleep(delay)
            waited += max(delay, self._clock() - started)
            spent += TeacherUsage(retries=1)

    def map(
        self,
        jobs: Iterable[T],
        build_messages: Callable[[T], list[dict[str, str]]],
        on_done: Callable[[T, Completion | TeacherError], None],
        *,
        concurrency: int,
        should_continue: Callable[[], bool] = lambda: True,
    ) -> None:
        """Run ``jobs`` with at most ``concurrency`` requests in flight.

        ``jobs`` is pulled lazily, one job per free slot, and only after ``should_continue()`` said yes:
        once it says no, nothing new is sent, and the requests in flight finish and are delivered.
        ``build_messages`` and ``on_done`` run on the calling thread, one at a time, in completion order,
        so callers need no locks. An exception from either stops submission and propagates once the
        requests in flight have finished.
        """
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ValueError(f"concurrency must be an int >= 1, got {concurrency!r}")
        pending: dict[Future[Completion | TeacherError], T] = {}
        source = iter(jobs)
        submitting = True
        with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="teacher") as pool:
            while True:
                while submitting and len(pending) < concurrency:
                    if not should_continue():
                        submitting = False
                        break
                    try:
                        job = next(source)
                    except StopIteration:
                        submitting = False
                        break
                    pending[pool.submit(self._complete_or_error, build_messages(job))] = job
                if not pending:
                    return
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    on_done(pending.pop(future), future.result())

    def _complete_or_error(self, messages: list[dict[str, str]]) -> Completion | TeacherError:
        try:
            return self.complete(messages)
        except TeacherError as exc:
            return exc

    def _encode(self, messages: list[dict[str, str]]) -> bytes:
        if not isinstance(messages, list) or not messages:
            raise ValueError("messages must be a non-empty list of {'role': str, 'content': str} dicts")
        for i, message in enumerate(messages):
            if not (
                isinstance(message, dict)
                and isinstance(message.get("role"), str)
                and isinstance(message.get("content"), str)
            ):
                raise ValueError(f"messages[{i}] must be a dict with str 'role' and 'content'")
        request = {
            "model": self.model,
            "messages": messages,
            "max_tokens": self._max_tokens,
            "temperature": self._temperature,
        }
        return json.dumps(request).encode("utf-8")

    def _send(self, body: bytes) -> _Reply:
        conn = self._pool.acquire()
        try:
            conn.request("POST", self._path, body=body, headers=self._headers)
            response = conn.getresponse()
            data = response.read()
        except BaseException:
            self._pool.discard(conn)  # its state is unknown: never reuse it
            raise
        self._pool.release(conn)
        return _Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, data)

    def _completion(self, body: bytes, spent: TeacherUsage) -> Completion:
        payload = self._json_or_none(body)
        if not isinstance(payload, dict):
            raise TeacherError("malformed reply: body is not a JSON object", spent)
        spent += _usage_in(payload)
        choices = payload.get("choices")
        first = choices[0] if isinstance(choices, list) and choices else None
        if not isinstance(first, dict):
            raise TeacherError("malformed reply: no choices", spent)
        message = first.get("message")
        text = _message_text(message.get("content")) if isinstance(message, dict) else None
        if text is None:
            raise TeacherError("malformed reply: choices[0].message.content is not text", spent)
        model = payload.get("model")
        finish = first.get("finish_reason")
        return Completion(
            text=text,
            usage=spent,
            model=model if isinstance(model, str) and model else self.model,
            finish_reason=finish if isinstance(finish, str) else None,
        )

    @staticmethod
    def _json_or_none(body: bytes) -> Any:
        try:
            return json.loads(body)
        except ValueError:  # covers JSONDecodeError and UnicodeDecodeError
            return None

    def _backoff(self, retries_done: int) -> float:
        ceiling = min(self._backoff_max_s, self._backoff_base_s * (2.0**retries_done))
        # "Equal jitter": spreads synchronised workers apart but never waits less than half the step.
        return ceiling * (0.5 + 0.5 * min(1.0, max(0.0, self._jitter())))

    def _redact(self, reason: str) -> str:
        # Servers echo parts of a bad key back ("Incorrect API key provided: sk-..."): never pass it on.
        if self._api_key:
            reason = reason.replace(self._api_key, "[REDACTED]")
        return reason if len(reason) <= _REASON_MAX else reason[: _REASON_MAX - 3] + "..."
