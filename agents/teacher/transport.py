"""The teacher's HTTP transport: one httpx client with a keep-alive pool and a whole-request deadline.

httpx's timeouts apply per operation (connect, each read, each write), so a server that drips its reply
a byte at a time would never time out. Here every request has one deadline, connect to last byte:
the network backend cuts every socket operation's timeout (connect, TLS handshake, each read and write)
to what is left of it, so a reply dripped a byte at a time fails at the deadline like a stalled one. A
request past its deadline raises :class:`DeadlineExceeded`; its connection is never reused.

Proxies (``HTTPS_PROXY``, ``HTTP_PROXY``, ``ALL_PROXY``, ``NO_PROXY``) and CA settings
(``SSL_CERT_FILE``, ``SSL_CERT_DIR``) come from the environment, as in curl and the OpenAI SDK.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import httpcore
import httpx

__all__ = ["SSE_DONE", "DeadlineExceeded", "Reply", "Transport", "TransportError", "iter_sse"]

SSE_DONE = "[DONE]"  # the data of the last event of an OpenAI-style stream


class TransportError(Exception):
    """The request got no complete reply (connection refused, reset, proxy or TLS failure)."""

    def __init__(self, reason: str, *, certificate: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.certificate = certificate  # a TLS certificate problem: asking again will not help


class DeadlineExceeded(TransportError):
    """The whole request (connect to last byte) took longer than its deadline."""


@dataclass(frozen=True)
class Reply:
    """A complete HTTP reply; ``first_byte_s`` is when the first body chunk arrived, from the start."""

    status: int
    headers: Mapping[str, str]  # lower-case names
    body: bytes
    first_byte_s: float | None = None
    elapsed_s: float = 0.0


class _Stream(httpcore.NetworkStream):
    """A socket stream whose every operation waits no longer than the current request's deadline."""

    def __init__(self, inner: httpcore.NetworkStream, backend: _DeadlineBackend) -> None:
        self._inner = inner
        self._backend = backend
        self._unsent: list[bytes] = []
        self._write_timeout: float | None = None
        backend.opened(self)

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        self._flush()
        return self._inner.read(max_bytes, self._backend.clamp(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        # httpcore writes a request's headers and body separately; sent as one segment when the reply is
        # awaited, they cost one system call and one wake-up of the server instead of two.
        if buffer:
            self._unsent.append(buffer)
            self._write_timeout = timeout

    def _flush(self) -> None:
        if self._unsent:
            data = b"".join(self._unsent)
            self._unsent.clear()
            self._inner.write(data, self._backend.clamp(self._write_timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._backend.closed(self)
        self._inner.close()

    def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        self._flush()
        clamped = self._backend.clamp(timeout, httpcore.ConnectTimeout)
        self._backend.closed(self)
        return _Stream(self._inner.start_tls(ssl_context, server_hostname, clamped), self._backend)

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)

    def shutdown(self) -> None:
        sock = self._inner.get_extra_info("socket")
        if isinstance(sock, socket.socket):
            # shutdown() wakes a thread blocked reading this socket; close() alone would not.
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class _DeadlineBackend(httpcore.NetworkBackend):
    """httpcore's socket backend, with each operation's timeout cut to the calling thread's deadline.

    Each request runs start to finish on one worker thread, so the deadline is thread-local.
    """

    def __init__(self) -> None:
        self._inner = httpcore.SyncBackend()
        self._local = threading.local()
        self._lock = threading.Lock()
        self._open: set[_Stream] = set()

    def set_deadline(self, deadline: float | None) -> None:
        self._local.deadline = deadline

    def clamp(self, timeout: float | None, error: type[Exception]) -> float | None:
        deadline: float | None = getattr(self._local, "deadline", None)
        if deadline is None:
            return timeout
        left = deadline - time.monotonic()
        if left <= 0:
            raise error("the request's deadline passed")
        return left if timeout is None else min(timeout, left)

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        timeout = self.clamp(timeout, httpcore.ConnectTimeout)
        # httpcore writes the headers and the body separately; with Nagle on, the body would wait for
        # the server's delayed ACK of the headers on every request.
        options = [*(socket_options or ()), (socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]
        inner = self._inner.connect_tcp(host, port, timeout, local_address, options)
        return _Stream(inner, self)

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        raise httpcore.ConnectError("unix sockets are not used by the teacher")

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)

    def opened(self, stream: _Stream) -> None:
        with self._lock:
            self._open.add(stream)

    def closed(self, stream: _Stream) -> None:
        with self._lock:
            self._open.discard(stream)

    def shutdown_all(self) -> None:
        with self._lock:
            streams = list(self._open)
        for stream in streams:
            stream.shutdown()


class _Client(httpx.Client):
    """An httpx client whose transports, the proxy ones built from the environment included, all use
    the deadline backend. httpx offers no public way to give its transports a network backend; these
    two factory methods are where it builds them."""

    def __init__(self, backend: _DeadlineBackend, **kwargs: Any) -> None:
        self._backend = backend
        super().__init__(**kwargs)

    def _init_transport(self, *args: Any, **kwargs: Any) -> httpx.BaseTransport:
        return self._adopt(super()._init_transport(*args, **kwargs))

    def _init_proxy_transport(self, *args: Any, **kwargs: Any) -> httpx.BaseTransport:
        return self._adopt(super()._init_proxy_transport(*args, **kwargs))

    def _adopt(self, transport: httpx.BaseTransport) -> httpx.BaseTransport:
        pool = getattr(transport, "_pool", None)
        if not isinstance(pool, httpcore.ConnectionPool) or not hasattr(pool, "_network_backend"):
            raise RuntimeError(
                f"unsupported httpx version {httpx.__version__}: cannot set the teacher's deadline"
            )
        pool._network_backend = self._backend
        return transport


_Route = tuple[httpx.BaseTransport, httpx.Headers]


class Transport:
    """POSTs JSON to one URL over keep-alive connections; safe to share between worker threads.

    A request borrows a client of its own (one keep-alive connection) from a free list and gives it
    back: httpcore's shared pool would scan all its connections (quadratically, and with a poll() each)
    on every request and every release, which at 32 connections cost more CPU than the request itself.
    """

    def __init__(self, url: str, headers: Mapping[str, str]) -> None:
        self._url = httpx.URL(url)
        self._backend = _DeadlineBackend()
        self._extra_headers = dict(headers)
        self._lock = threading.Lock()
        self._clients: list[httpx.Client] = []
        self._idle: list[_Route] = []
        self._closed = False
        # One TLS context for every client: building one loads the CA bundle (tens of milliseconds).
        self._tls = httpx.create_ssl_context(trust_env=True)
        self._release(self._acquire())  # the environment's settings are read (and rejected) here

    def _acquire(self) -> _Route:
        with self._lock:
            if self._closed:
                raise TransportError("teacher closed")
            if self._idle:
                return self._idle.pop()
        client = _Client(self._backend, trust_env=True, verify=self._tls)
        with self._lock:
            self._clients.append(client)
        # Every request goes to this one URL: its transport (direct, or the proxy the environment names
        # for it) is chosen once. Sending through it skips the client's per-request cookie, auth and
        # redirect handling, which the teacher does not use and which doubled its CPU per request.
        return client._transport_for_url(self._url), httpx.Headers({**client.headers, **self._extra_headers})

    def _release(self, route: _Route) -> None:
        with self._lock:
            if not self._closed:
                self._idle.append(route)

    def close(self) -> None:
        """Close every connection; requests in flight fail with TransportError at once."""
        with self._lock:
            self._closed = True
            clients, self._clients, self._idle = self._clients, [], []
        self._backend.shutdown_all()
        for client in clients:
            client.close()

    def post(self, body: bytes, timeout_s: float) -> Reply:
        """Send ``body`` and read the whole reply within ``timeout_s``; raises TransportError."""
        started = time.monotonic()
        deadline = started + timeout_s
        first_byte: float | None = None
        chunks: list[bytes] = []
        timeouts = dict.fromkeys(("connect", "read", "write", "pool"), timeout_s)
        route = self._acquire()
        request = httpx.Request(
            "POST", self._url, headers=route[1], content=body, extensions={"timeout": timeouts}
        )
        self._backend.set_deadline(deadline)
        try:
            response = route[0].handle_request(request)
            try:
                assert isinstance(response.stream, httpx.SyncByteStream)
                for chunk in response.stream:
                    if first_byte is None:
                        first_byte = time.monotonic() - started
                    chunks.append(chunk)
            finally:
                response.close()
            status, headers = response.status_code, response.headers
        except httpx.TimeoutException:
            raise DeadlineExceeded(f"no complete reply within timeout_s={timeout_s:g}") from None
        except (httpx.TransportError, httpx.StreamError, OSError) as exc:
            if time.monotonic() >= deadline:
                raise DeadlineExceeded(f"no complete reply within timeout_s={timeout_s:g}") from None
            raise TransportError(_describe(exc), certificate=_is_certificate_error(exc)) from None
        finally:
            self._backend.set_deadline(None)
            self._release(route)
        return Reply(
            status,
            {k.lower(): v for k, v in headers.items()},
            b"".join(chunks),
            first_byte,
            time.monotonic() - started,
        )


def _is_certificate_error(exc: BaseException) -> bool:
    text = str(exc)
    return "CERTIFICATE_VERIFY_FAILED" in text or "certificate verify failed" in text


def _describe(exc: BaseException) -> str:
    if isinstance(exc, httpx.ProxyError):
        return f"proxy error: {exc}"
    if _is_certificate_error(exc):
        return f"TLS certificate not trusted: {exc} (set SSL_CERT_FILE to your CA bundle)"
    detail = str(exc)
    return f"connection error: {type(exc).__name__}" + (f" ({detail})" if detail else "")


def iter_sse(body: bytes) -> Iterator[str]:
    """The ``data:`` payloads of a server-sent-events body, in order, the final ``[DONE]`` (:data:`SSE_DONE`)
    included: a stream that lacks it was cut."""
    for line in body.decode("utf-8", errors="replace").splitlines():
        if line.startswith("data:"):
            data = line[5:].strip()
            if data:
                yield data
