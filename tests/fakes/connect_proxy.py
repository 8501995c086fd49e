"""A small real HTTP proxy on 127.0.0.1: CONNECT tunnels (https) and absolute-URI forwarding (http).

It records every request head it received (``CONNECT 127.0.0.1:5000 HTTP/1.1``, ``POST http://...``)
and pipes the bytes both ways unchanged. Only loopback targets are served; anything else gets a 403.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
from urllib.parse import urlsplit

__all__ = ["ConnectProxy"]

_HEAD_MAX = 65_536


class ConnectProxy:
    """Use as a context manager; ``url`` is what HTTPS_PROXY/HTTP_PROXY should hold."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lines: list[str] = []
        self._threads: list[threading.Thread] = []
        self._socks: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self._stopping = threading.Event()

    def __enter__(self) -> ConnectProxy:
        listener = socket.create_server(("127.0.0.1", 0))
        listener.settimeout(0.1)
        self._listener = listener
        thread = threading.Thread(target=self._accept, daemon=True)
        thread.start()
        self._threads.append(thread)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stopping.set()
        with self._lock:
            socks = list(self._socks)
        for sock in socks:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        for thread in list(self._threads):
            thread.join(5.0)
        if self._listener is not None:
            self._listener.close()

    @property
    def url(self) -> str:
        assert self._listener is not None, "ConnectProxy is not started"
        return f"http://127.0.0.1:{self._listener.getsockname()[1]}"

    @property
    def request_lines(self) -> list[str]:
        """The first line of every request head the proxy received, in order."""
        with self._lock:
            return list(self._lines)

    def _accept(self) -> None:
        assert self._listener is not None
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(client,), daemon=True)
            with self._lock:
                self._threads.append(thread)
            thread.start()

    def _serve(self, client: socket.socket) -> None:
        upstream: socket.socket | None = None
        self._own(client)
        try:
            head = b""
            while b"\r\n\r\n" not in head and len(head) < _HEAD_MAX:
                data = client.recv(4096)
                if not data:
                    return
                head += data
            line = head.split(b"\r\n", 1)[0].decode("latin-1")
            with self._lock:
                self._lines.append(line)
            method, target, _ = [*line.split(" ", 2), "", ""][:3]
            host, port = _target(method, target)
            if host != "127.0.0.1":
                client.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                return
            upstream = socket.create_connection((host, port), timeout=5.0)
            self._own(upstream)
            if method == "CONNECT":
                client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            else:
                upstream.sendall(head)  # the fake server takes absolute-form request targets as they are
            _pipe(client, upstream, self._stopping)
        except OSError:
            pass
        finally:
            for sock in (client, upstream):
                if sock is not None:
                    self._disown(sock)
                    sock.close()

    def _own(self, sock: socket.socket) -> None:
        with self._lock:
            self._socks.add(sock)

    def _disown(self, sock: socket.socket) -> None:
        with self._lock:
            self._socks.discard(sock)


def _target(method: str, target: str) -> tuple[str, int]:
    if method == "CONNECT":
        host, _, port = target.rpartition(":")
        return host.strip("[]"), int(port)
    parts = urlsplit(target)
    return parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)


def _pipe(a: socket.socket, b: socket.socket, stopping: threading.Event) -> None:
    peers = {a: b, b: a}
    while not stopping.is_set():
        readable, _, _ = select.select(list(peers), [], [], 0.1)
        for sock in readable:
            data = sock.recv(65_536)
            if not data:
                return
            peers[sock].sendall(data)
