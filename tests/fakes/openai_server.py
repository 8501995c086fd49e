"""A scriptable fake OpenAI-compatible chat-completions server over real HTTP on 127.0.0.1.

Each request to ``.../chat/completions`` takes the next item of the script (or the default reply when
the script is empty), waits ``latency_s``, and answers. Script items:

- ``("ok", text, prompt_tokens, completion_tokens[, cached_tokens])``: a 200 reply with that content and
  usage (``prompt_tokens_details.cached_tokens`` when given)
- ``("nousage", text)``: a 200 reply without ``usage``, as some servers send
- ``("status", code)`` / ``("status", code, headers)`` / ``("status", code, headers, json_body)``
- ``("malformed",)``: a 200 reply whose body is not JSON
- ``("json", obj)``: a 200 reply with ``obj`` as its JSON body (e.g. one without ``choices``)
- ``("slow", seconds)``: waits that long more, then the default reply
- ``("drip", interval_s, pieces)``: the default reply's headers at once, then its body in ``pieces``
  parts ``interval_s`` apart: no single read is slow, only the whole reply
- ``("drop",)``: closes the connection without answering
- ``("raw", content_type, data)``: a 200 reply with exactly the bytes ``data`` (e.g. a stream that ends
  with ``[DONE]`` but no content and no ``finish_reason``, as llama.cpp's server sends under load); the
  usage it carries (a JSON body's, or a stream chunk's) counts in ``usage_sent``
- ``("cut", keep)``: the default reply (streamed when asked) cut after ``keep`` bytes: sent without a
  Content-Length, then the connection is closed, as by a server that died mid-reply; no usage counted

The default reply is ``responder(request_json)`` when one is given (a teacher that knows the answers),
else a python code block with deterministic usage: prompt tokens are the words of the
request's message contents, completion tokens the words of the reply. The server records every request
and the largest number of requests it held in flight at once.

Provider behaviours, set as attributes: ``fallback`` is the item answered when the script is empty
(e.g. a 429 ``insufficient_quota`` for good); ``down`` is a predicate, true while the server is out
(HTTP 503); ``reasoning_only`` rejects ``max_tokens`` and ``temperature`` with OpenAI's 400, as o1/o3
do. A request with ``"stream": true`` gets its reply as server-sent events, with a final usage chunk
when ``stream_options.include_usage`` is set. ``tls`` (an ``ssl.SSLContext``) serves https.

Run it by hand with ``python tests/fakes/openai_server.py --port 8000 --latency 0.2``.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["FakeOpenAIServer", "RecordedRequest", "ScriptItem"]

ScriptItem = tuple[Any, ...]
_KINDS = {
    "ok": (4, 5),
    "nousage": 2,
    "status": (2, 3, 4),
    "malformed": 1,
    "json": 2,
    "slow": 2,
    "drop": 1,
    "drip": 3,
    "raw": 3,
    "cut": 2,
}


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the server received it."""

    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    arrived_at: float  # time.monotonic()
    client_port: int  # tells the client's keep-alive connections apart

    def json(self) -> Any:
        return json.loads(self.body)


def _check_item(item: ScriptItem) -> None:
    if not isinstance(item, tuple) or not item or item[0] not in _KINDS:
        raise ValueError(f"script item must be a tuple starting with one of {sorted(_KINDS)}, got {item!r}")
    sizes = _KINDS[item[0]]
    if len(item) not in (sizes if isinstance(sizes, tuple) else (sizes,)):
        raise ValueError(f"script item {item!r} has the wrong number of fields")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive; every reply carries Content-Length
    server: _Server

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes; with Nagle on, the body waits for the client's
        # delayed ACK (~40 ms), which real servers (uvicorn, llama.cpp) avoid the same way.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.fake._track(self.connection, threading.current_thread(), add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.fake._track(self.connection, threading.current_thread(), add=False)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # tests and benchmarks want quiet

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        fake = self.server.fake
        fake._arrive(
            RecordedRequest(
                "POST",
                self.path,
                {k.lower(): v for k, v in self.headers.items()},
                body,
                time.monotonic(),
                self.client_address[1],
            )
        )
        try:
            if not self.path.split("?")[0].endswith("/chat/completions"):
                self._send_json(404, {"error": {"message": f"no route {self.path}"}})
                return
            item = fake._next_item()
            if fake.latency_s:
                time.sleep(fake.latency_s)  # simulated network and model latency
            refusal = fake._refusal(body)
            if refusal is not None:
                item = refusal
            self._answer(item, body)
        except OSError:
            self.close_connection = True  # the client gave up (e.g. its timeout); nothing to answer
        finally:
            fake._leave()

    def do_GET(self) -> None:
        self._send_json(404, {"error": {"message": "only POST .../chat/completions is served"}})

    def _answer(self, item: ScriptItem | None, body: bytes) -> None:
        fake = self.server.fake
        kind = item[0] if item else "default"
        stream = _wants_stream(body)
        if kind == "ok":
            assert item is not None
            cached = item[4] if len(item) > 4 else None
            self._send_reply(fake._reply_payload(item[1], item[2], item[3], cached), stream)
        elif kind == "nousage":
            assert item is not None
            payload = fake._reply_payload(item[1], 0, 0)
            del payload["usage"]
            self._send_reply(payload, stream)
        elif kind == "status":
            assert item is not None
            headers = item[2] if len(item) > 2 else {}
            payload = item[3] if len(item) > 3 else {"error": {"message": f"scripted status {item[1]}"}}
            self._send_json(item[1], payload, headers)
        elif kind == "malformed":
            self._send_raw(200, b'{"choices": [ {"message": ', {"Content-Type": "application/json"})
        elif kind == "json":
            assert item is not None
            self._send_json(200, item[1])
            if isinstance(item[1], dict) and isinstance(item[1].get("usage"), dict):
                fake._count_usage(item[1]["usage"])
        elif kind == "drip":
            assert item is not None
            self._drip(json.dumps(fake._default_payload(body)).encode(), item[1], item[2])
        elif kind == "drop":
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
        elif kind == "raw":
            assert item is not None
            self._send_raw(200, item[2], {"Content-Type": item[1]})
            usage = _usage_in(item[2])
            if usage is not None:
                fake._count_usage(usage)
        elif kind == "cut":
            assert item is not None
            self._cut(fake._default_payload(body), stream, item[1])
        else:
            if kind == "slow":
                assert item is not None
                time.sleep(item[1])
            self._send_reply(fake._default_payload(body), stream)

    def _send_reply(self, payload: dict[str, Any], stream: dict[str, Any] | None = None) -> None:
        if stream is None:
            self._send_json(200, payload)
        else:
            self._send_raw(200, _sse(payload, stream), {"Content-Type": "text/event-stream"})
        if "usage" in payload:  # only once written: a client that gave up got none
            self.server.fake._count_usage(payload["usage"])

    def _cut(self, payload: dict[str, Any], stream: dict[str, Any] | None, keep: int) -> None:
        whole = json.dumps(payload).encode() if stream is None else _sse(payload, stream)
        self.send_response(200)
        self.send_header("Content-Type", "application/json" if stream is None else "text/event-stream")
        self.send_header("Connection", "close")  # no length: the body ends where the connection does
        self.end_headers()
        self.wfile.write(whole[:keep])
        self.wfile.flush()
        self.close_connection = True

    def _drip(self, data: bytes, interval_s: float, pieces: int) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.flush()
        step = max(1, -(-len(data) // pieces))
        for start in range(0, len(data), step):
            time.sleep(interval_s)
            self.wfile.write(data[start : start + step])
            self.wfile.flush()

    def _send_json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        self._send_raw(
            status, json.dumps(payload).encode(), {"Content-Type": "application/json", **(headers or {})}
        )

    def _send_raw(self, status: int, data: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()


def _wants_stream(body: bytes) -> dict[str, Any] | None:
    """The request's stream options when it asked for a streamed reply, else None."""
    try:
        request = json.loads(body)
    except ValueError:
        return None
    if not isinstance(request, dict) or request.get("stream") is not True:
        return None
    options = request.get("stream_options")
    return options if isinstance(options, dict) else {}


def _usage_in(data: bytes) -> dict[str, int] | None:
    """The last ``usage`` object of a JSON body or of a stream's chunks, if any."""
    found = None
    text = data.decode(errors="replace")
    payloads = [line[5:].strip() for line in text.splitlines() if line.startswith("data:")]
    for payload in payloads or [text]:
        try:
            chunk = json.loads(payload)
        except ValueError:
            continue
        if isinstance(chunk, dict) and isinstance(chunk.get("usage"), dict):
            found = chunk["usage"]
    return found


def _sse(payload: dict[str, Any], options: dict[str, Any]) -> bytes:
    """``payload`` as the chunks OpenAI streams: role, content in pieces, finish, then usage if asked."""
    base = {k: payload[k] for k in ("id", "created", "model")} | {"object": "chat.completion.chunk"}
    choice = payload["choices"][0]
    text = choice["message"]["content"]
    pieces = [text[i : i + 8] for i in range(0, len(text), 8)] or [""]
    chunks = [{**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}]
    chunks += [{**base, "choices": [{"index": 0, "delta": {"content": p}}]} for p in pieces]
    chunks.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": choice["finish_reason"]}]})
    if options.get("include_usage") and "usage" in payload:
        chunks.append({**base, "choices": [], "usage": payload["usage"]})
    lines = [f"data: {json.dumps(chunk)}\n\n" for chunk in chunks] + ["data: [DONE]\n\n"]
    return "".join(lines).encode()


_UNSUPPORTED = {
    "max_tokens": (
        "unsupported_parameter",
        "Unsupported parameter: 'max_tokens' is not supported with this model. "
        "Use 'max_completion_tokens' instead.",
    ),
    "temperature": (
        "unsupported_value",
        "Unsupported value: 'temperature' does not support 0.7 with this model. "
        "Only the default (1) value is supported.",
    ),
}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # the default backlog of 5 drops SYNs under a burst of 32 connects
    fake: FakeOpenAIServer
    tls: ssl.SSLContext | None = None

    def get_request(self) -> tuple[socket.socket, Any]:
        conn, addr = super().get_request()
        if self.tls is not None:
            conn = self.tls.wrap_socket(conn, server_side=True)
        return conn, addr


class FakeOpenAIServer:
    """The fake server; use as a context manager, then point a client at ``.url``."""

    def __init__(
        self,
        *,
        latency_s: float = 0.0,
        script: Iterable[ScriptItem] = (),
        model: str = "fake-teacher",
        port: int = 0,
        tls: ssl.SSLContext | None = None,
        responder: Callable[[dict[str, Any]], str] | None = None,
    ) -> None:
        self.latency_s = latency_s
        self.responder = responder
        self.model = model
        self.tls = tls
        self.fallback: ScriptItem | None = None
        self.down: Callable[[], bool] | None = None
        self.reasoning_only = False
        self._port = port
        self._cond = threading.Condition()
        self._script: collections.deque[ScriptItem] = collections.deque()
        self._requests: list[RecordedRequest] = []
        self._in_flight = 0
        self._max_in_flight = 0
        self._replies = 0
        self._prompt_tokens_sent = 0
        self._completion_tokens_sent = 0
        self._open: dict[socket.socket, threading.Thread] = {}
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None
        self.push(*script)

    # --- lifecycle -------------------------------------------------------------------------------------
    def start(self) -> FakeOpenAIServer:
        httpd = _Server(("127.0.0.1", self._port), _Handler)
        httpd.fake = self
        httpd.tls = self.tls
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop serving, cut open keep-alive connections and join every handler thread."""
        if self._httpd is None:
            return
        self._httpd.shutdown()
        self._httpd.server_close()
        with self._cond:
            open_conns = dict(self._open)
        self.drop_connections()
        deadline = time.monotonic() + timeout_s
        for thread in [*open_conns.values(), self._thread]:
            if thread is not None:
                thread.join(max(0.0, deadline - time.monotonic()))
        self._httpd = None

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("FakeOpenAIServer is not started")
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://127.0.0.1:{self._httpd.server_address[1]}/v1"

    # --- scripting and observation ---------------------------------------------------------------------
    def push(self, *items: ScriptItem) -> None:
        """Append items to the script; each is checked now so that a typo fails the test at once."""
        for item in items:
            _check_item(item)
        with self._cond:
            self._script.extend(items)

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._cond:
            return list(self._requests)

    @property
    def max_in_flight(self) -> int:
        with self._cond:
            return self._max_in_flight

    @property
    def usage_sent(self) -> tuple[int, int]:
        """(prompt_tokens, completion_tokens) summed over every 200 reply with usage that was written."""
        with self._cond:
            return self._prompt_tokens_sent, self._completion_tokens_sent

    @property
    def open_connections(self) -> int:
        with self._cond:
            return len(self._open)

    def drop_connections(self) -> None:
        """Close every open client connection from the server side, as an idle keep-alive timeout would."""
        with self._cond:
            conns = list(self._open)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def wait_for(self, predicate: Callable[[FakeOpenAIServer], bool], timeout_s: float = 5.0) -> bool:
        """Wait until ``predicate(self)`` holds (checked on every arrival and departure), with a deadline."""
        with self._cond:
            return self._cond.wait_for(lambda: predicate(self), timeout_s)

    def wait_for_requests(self, count: int, timeout_s: float = 5.0) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: len(self._requests) >= count, timeout_s)

    # --- called by the handler -------------------------------------------------------------------------
    def _track(self, conn: socket.socket, thread: threading.Thread, *, add: bool) -> None:
        with self._cond:
            if add:
                self._open[conn] = thread
            else:
                self._open.pop(conn, None)
            self._cond.notify_all()

    def _arrive(self, request: RecordedRequest) -> None:
        with self._cond:
            self._requests.append(request)
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)
            self._cond.notify_all()

    def _leave(self) -> None:
        with self._cond:
            self._in_flight -= 1
            self._cond.notify_all()

    def _next_item(self) -> ScriptItem | None:
        if self.down is not None and self.down():
            return ("status", 503, {}, {"error": {"message": "The server is overloaded or not ready yet."}})
        with self._cond:
            return self._script.popleft() if self._script else self.fallback

    def _refusal(self, body: bytes) -> ScriptItem | None:
        """OpenAI's 400 for a sampling parameter a reasoning model does not take, when that mode is on."""
        if not self.reasoning_only:
            return None
        try:
            request = json.loads(body)
        except ValueError:
            return None
        for param, (code, message) in _UNSUPPORTED.items():
            if isinstance(request, dict) and param in request:
                error = {"message": message, "type": "invalid_request_error", "param": param, "code": code}
                return ("status", 400, {}, {"error": error})
        return None

    def _reply_payload(
        self, text: str, prompt_tokens: int, completion_tokens: int, cached_tokens: int | None = None
    ) -> dict[str, Any]:
        with self._cond:
            self._replies += 1
            number = self._replies
        return {
            "id": f"chatcmpl-fake-{number}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.model,
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
                **(
                    {}
                    if cached_tokens is None
                    else {"prompt_tokens_details": {"cached_tokens": cached_tokens}}
                ),
            },
        }

    def _count_usage(self, usage: dict[str, int]) -> None:
        with self._cond:
            self._prompt_tokens_sent += usage.get("prompt_tokens", 0)
            self._completion_tokens_sent += usage.get("completion_tokens", 0)

    def _default_payload(self, body: bytes) -> dict[str, Any]:
        if self.responder is not None:
            text = self.responder(json.loads(body))
            return self._reply_payload(text, max(1, len(body.split())), max(1, len(text.split())))
        try:
            messages = json.loads(body).get("messages") or []
            prompt_words = sum(len(str(m.get("content", "")).split()) for m in messages)
        except (ValueError, AttributeError):
            prompt_words = 0
        with self._cond:
            n = self._replies + 1
        text = f"```python\ndef answer_{n}(x: int) -> int:\n    return x + {n}\n```"
        return self._reply_payload(text, max(1, prompt_words), len(text.split()))


def main() -> None:
    parser = argparse.ArgumentParser(description="A fake OpenAI-compatible chat-completions server.")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before each reply")
    args = parser.parse_args()
    with FakeOpenAIServer(latency_s=args.latency, port=args.port) as server:
        print(f"serving {server.url} (latency {args.latency:g}s); Ctrl-C to stop", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()


if __name__ == "__main__":
    main()
