"""The HTTP teacher: an OpenAI-compatible chat-completions client for the generate stage.

Works against OpenAI, Anthropic's OpenAI-compatible endpoint, vLLM, llama.cpp server and Ollama
(anything that serves ``POST {base_url}/chat/completions``), over keep-alive httpx connections
(:mod:`.transport`: proxies and CA settings from the environment, a whole-request deadline).
``base_url`` may list several servers, comma-separated: each attempt goes to the one with the fewest
requests in flight, and one that keeps failing is taken out for a while (:mod:`.pool`); a
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
- ``"incomplete"``: the retries ran out on 200 replies that did not end properly (no ``finish_reason``,
  ``"length"``, no content, a stream cut before ``[DONE]``, a body without ``choices``: see
  :mod:`.reply`). Retried like a transient failure, but never parked on: the server is up.
- ``"sample"``: only this request failed: another 4xx, or a 200 reply that ended but is malformed. The
  server answered; sending it again would only spend budget on the same answer.

A 400 refusing ``max_tokens``/``temperature`` switches the client to the reasoning-model form once
(:mod:`.request`) and is sent again at once. Every attempt is counted in :class:`TeacherUsage`,
failed and timed-out ones too, and with an :class:`~.intent.IntentLog` each is written down before it
is sent. No message ever contains the API key.

The parts: the retry policy (:mod:`.retry`), the attempts of one call across the pool (:mod:`.attempts`),
and many calls in flight with parking on an outage (:mod:`.parking`); the types they share are in
:mod:`.base`.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar
from urllib.parse import urlsplit

from heidi_engine.agents.teacher.attempts import AttemptLoop
from heidi_engine.agents.teacher.base import Completion, Outage, TeacherError
from heidi_engine.agents.teacher.intent import IntentLog
from heidi_engine.agents.teacher.parking import map_jobs
from heidi_engine.agents.teacher.pool import EndpointReport, split_urls
from heidi_engine.agents.teacher.request import is_reasoning_model
from heidi_engine.agents.teacher.retry import RetryPolicy

__all__ = ["OpenAITeacher"]

T = TypeVar("T")


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
        intents: IntentLog | None = None,
    ) -> None:
        urls = _checked_urls(base_url)
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
        self._park_interval_s = park_interval_s
        self._clock = clock
        self._sleep = sleep
        api_key = api_key or None
        policy = RetryPolicy(
            api_key,
            max_retries=max_retries,
            max_total_wait_s=max_total_wait_s,
            backoff_base_s=backoff_base_s,
            backoff_max_s=backoff_max_s,
            jitter=jitter,
        )
        headers = {
            "Content-Type": "application/json",
            "Accept": "application/json, text/event-stream",
            "User-Agent": "autotrain-supervisor-teacher",
        }
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self._attempts = AttemptLoop(
            urls,
            model,
            headers,
            policy,
            timeout_s=timeout_s,
            max_tokens=max_tokens,
            temperature=temperature,
            stream=stream,
            reasoning=is_reasoning_model(model),
            clock=clock,
            sleep=sleep,
            pool_backoff_s=pool_backoff_s,
            intents=intents,
        )

    def __repr__(self) -> str:
        return f"OpenAITeacher(base_url={self.base_url!r}, model={self.model!r})"

    def __enter__(self) -> OpenAITeacher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def reasoning(self) -> bool:
        """True once requests use the reasoning-model form (by name, or after the provider asked for it)."""
        return self._attempts.reasoning

    def close(self) -> None:
        """Close every connection; calls still in flight fail with TeacherError("teacher closed")."""
        self._attempts.close()

    def endpoints(self) -> list[EndpointReport]:
        """What each endpoint was sent and how it answered since this client was made (credentials never
        part of a name)."""
        return self._attempts.report()

    def complete(self, messages: list[dict[str, str]]) -> Completion:
        """One chat completion, retried as the module docstring describes; raises TeacherError."""
        return self._attempts.complete(messages)

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
        map parks (one probe request, a single attempt, every ``park_interval_s``, ``should_continue``
        asked between waits so that a stop still lands) and the kept jobs are sent again once a request
        gets through.
        Jobs still kept when ``should_continue`` says no are neither done nor failed.
        """
        map_jobs(
            self.complete,
            jobs,
            build_messages,
            on_done,
            concurrency=concurrency,
            should_continue=should_continue,
            on_outage=on_outage,
            park_interval_s=self._park_interval_s,
            clock=self._clock,
            sleep=self._sleep,
            probe=lambda messages: self._attempts.complete(messages, retries=False),
        )


def _checked_urls(base_url: str | Sequence[str]) -> list[str]:
    """The endpoints ``base_url`` names; ValueError for a URL that is not http(s) or carries credentials."""
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
    return urls
