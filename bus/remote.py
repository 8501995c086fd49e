"""Remote clients over TCP, encrypted and authenticated with ZeroMQ CURVE.

The listening side (:class:`RemoteListener`) binds the TCP endpoints next to the local ones, after
setting CURVE on the socket (libzmq copies a socket's options into each endpoint when it is bound, so
the ipc endpoints and a plain ``--tcp-port`` stay as they were: local, with every right). A ZAP handler
thread admits a connection only when its public key belongs to an authorized client
(:mod:`heidi_engine.bus.clients`), names the connection by that key (the ZAP user id, which libzmq
attaches to every message the connection carries), and counts every refusal.

Revocation takes effect within a second on every endpoint, and costs the other clients nothing: the bus
server looks up the sender of each message it receives by that user id (:meth:`RemoteListener.client`)
and drops what a revoked key still sends on a connection it opened before; only the publishing socket,
which cannot refuse one subscriber, is unbound and bound again — its subscribers reconnect by themselves
and take a fresh snapshot, and the revoked one is refused at the handshake.

Nothing unauthenticated can hold the daemon: a TCP peer that has not finished its handshake within
:data:`HANDSHAKE_S` is dropped, and each endpoint holds at most :func:`peer_cap` connections; beyond it a
new one is shut at once (``remote:too_many_peers``), and the health says so while it lasts.
"""

from __future__ import annotations

import logging
import os
import resource
import socket
import threading
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import zmq
from zmq.utils import z85
from zmq.utils.monitor import recv_monitor_message

from heidi_engine.bus.clients import Client, clients_dir, load_clients
from heidi_engine.bus.connection import BusInfo, ConnectionFileError
from heidi_engine.bus.context import context
from heidi_engine.bus.keys import (
    RemoteError,
    parse_listen,
    remember_listen,
    require_curve,
    server_keys,
    tcp_endpoints,
)

ZAP_DOMAIN = b"autotrain"
ZAP_ENDPOINT = "inproc://zeromq.zap.01"
REFRESH_EVERY_S = 0.5
_LOG_EVERY_S = 60.0
_HANDSHAKE_FAILED = zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
HANDSHAKE_S = 5
MAX_PEERS_PER_ENDPOINT = 256
_OWN_FDS = 256  # what the supervisor keeps for itself (logs, state, agents, local clients) below the limit
_CROWDED_FOR_S = 10.0  # how long after a refusal the health still says "too many connections"
_WATCHED = _HANDSHAKE_FAILED | zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED | zmq.EVENT_CLOSED
_REBIND_TIMEOUT_S = 5.0
_STALE_S = 30.0  # how long after an unbind the descriptors it dropped are looked for among the counted


log = logging.getLogger(__name__)


class _Table:
    """The authorized clients, read again whenever their folder changed: by a fingerprint of its entries
    (name, inode, mtime, size), so that no change is missed however close in time to another. One reader at
    a time, so that a slow read cannot put back what a later one removed; a read that fails keeps what was
    known, and is tried again at the next check."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.folder = clients_dir(home)
        self._lock = threading.Lock()
        self._print: frozenset[tuple[str, int, int, int]] | None = None
        # Replaced whole, never changed in place: the bus server reads it from another thread.
        self.allowed: dict[bytes, Client] = {}
        self.failed: str | None = None
        self.reload()

    def _fingerprint(self) -> frozenset[tuple[str, int, int, int]] | None:
        try:
            with os.scandir(self.folder) as entries:
                return frozenset((e.name, e.inode(), *_stamp(e)) for e in entries)
        except OSError:
            return None

    def reload(self) -> bool:
        """Read the records again if the folder changed; True when the table was replaced."""
        with self._lock:
            mark = self._fingerprint()
            if mark is None or mark == self._print:
                return False
            try:
                allowed = load_clients(self.home)
            except Exception as exc:  # whatever a file did, admission goes on with what was known
                if self.failed is None:
                    log.error("cannot read the client records in %s: %s (tried again within a second)", self.folder, exc)
                self.failed = f"cannot read the client records: {exc}"
                return False
            self._print, self.allowed, self.failed = mark, allowed, None
            return True


def _stamp(entry: os.DirEntry[str]) -> tuple[int, int]:
    stat = entry.stat(follow_symlinks=False)
    return stat.st_mtime_ns, stat.st_size


def _accepted_on(fd: int, port: int, *, shut: bool = False) -> bool:
    """Whether ``fd`` is still a connection accepted on ``port`` (never its listener: a descriptor may be
    another's by the time its event is read); with ``shut``, shut it (libzmq then closes it and reports it
    gone). Never closed here: the descriptor is libzmq's."""
    try:
        conn = socket.socket(fileno=fd)
    except OSError:
        return False
    try:
        accepted = conn.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 0
        if not (conn.type == socket.SOCK_STREAM and accepted and conn.getsockname()[1] == port and conn.getpeername()):
            return False
        if shut:
            conn.shutdown(socket.SHUT_RDWR)
        return True
    except (OSError, IndexError, TypeError):
        return False
    finally:
        conn.detach()


def peer_cap() -> int:
    """Connections each remote endpoint holds at most: :data:`MAX_PEERS_PER_ENDPOINT`, less where the
    open-file limit leaves no room for three such endpoints and the supervisor's own files."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return MAX_PEERS_PER_ENDPOINT
    return max(8, min(MAX_PEERS_PER_ENDPOINT, (soft - _OWN_FDS) // 3))


# -- the client side -----------------------------------------------------------------------------------


def connect(sock: zmq.Socket[bytes], info: BusInfo, endpoint: str) -> None:
    """Connect ``sock`` to ``endpoint``, as a CURVE client first when ``info`` is a client file."""
    if info.remote:
        try:
            sock.setsockopt(zmq.CURVE_SERVERKEY, info.server_key.encode())
            sock.setsockopt(zmq.CURVE_PUBLICKEY, info.public_key.encode())
            sock.setsockopt(zmq.CURVE_SECRETKEY, info.secret_key.encode())
        except zmq.ZMQError as exc:
            raise ConnectionFileError(f"the client connection file's keys are not valid CURVE keys: {exc}") from None
    sock.connect(endpoint)


# -- the listening side --------------------------------------------------------------------------------


class _Gate(threading.Thread):
    """The ZAP handler and the connection watch: admits the keys of authorized clients, keeps each
    endpoint under its cap, counts refusals and failed handshakes."""

    def __init__(self, zap: zmq.Socket[bytes], monitors: Sequence[zmq.Socket[bytes]], table: _Table) -> None:
        super().__init__(name="bus-curve-gate", daemon=True)
        self.table = table
        self.admitted: set[bytes] = set()  # keys let in since start: a revoked one among them means a cut
        self.counts: Counter[str] = Counter()
        self.cap = peer_cap()
        self.watched: dict[bytes, int] = {}  # remote endpoint -> its port, once bound
        # The descriptors of the connections accepted and not yet gone, per remote endpoint.
        self.conns: dict[bytes, set[int]] = {}
        self._stale: dict[bytes, float] = {}  # endpoint -> until when an unbind's dropped connections may linger
        self.refused_at = float("-inf")
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self._zap = zap
        self._monitors = list(monitors)

    def run(self) -> None:
        poller = zmq.Poller()
        poller.register(self._zap, zmq.POLLIN)
        for monitor in self._monitors:
            poller.register(monitor, zmq.POLLIN)
        try:
            while not self.stopping.is_set():
                for sock, _ in poller.poll(200):
                    if sock is self._zap:
                        self._answer(self._zap.recv_multipart())
                        continue
                    try:
                        self._watch(recv_monitor_message(sock))
                    except Exception:  # a bad reading of one event must not stop admission
                        log.exception("cannot read a connection event")
        finally:
            # Without a handler every CURVE connection is refused (ZAP_ENFORCE_DOMAIN): closed, not open.
            # The monitors stay open, their events dropped when unread, until the listener closes them.
            self._zap.close(linger=0)

    def _watch(self, event: dict[str, object]) -> None:
        endpoint, kind, value = event["endpoint"], event["event"], event["value"]
        if not (isinstance(endpoint, bytes) and endpoint in self.watched and isinstance(kind, int)
                and isinstance(value, int)):
            return  # a local endpoint: not ours to count
        conns = self.conns.setdefault(endpoint, set())
        if kind == zmq.EVENT_CLOSED:
            # The listener was unbound: the connections it dropped are never reported gone one by one, and
            # close a moment later. Until then the set is checked against the descriptors themselves.
            self._stale[endpoint] = time.monotonic() + _STALE_S
        elif kind & _HANDSHAKE_FAILED:
            self._count("remote:bad_handshake")
        elif kind == zmq.EVENT_ACCEPTED:
            with self.lock:
                conns.add(value)
            if len(conns) > self.cap and self.open(endpoint) > self.cap:  # open() drops what an unbind left
                self._refuse(value, self.watched[endpoint])
        elif kind == zmq.EVENT_DISCONNECTED:
            with self.lock:
                conns.discard(value)

    def open(self, endpoint: bytes) -> int:
        """Connections the endpoint holds now."""
        if time.monotonic() < self._stale.get(endpoint, 0.0):
            self._prune(endpoint)
        return len(self.conns.get(endpoint, ()))

    def _prune(self, endpoint: bytes) -> None:
        """Forget the descriptors that are no longer connections accepted on ``endpoint``."""
        port = self.watched[endpoint]
        with self.lock:
            conns = self.conns.get(endpoint, set())
            conns.difference_update([fd for fd in list(conns) if not _accepted_on(fd, port)])

    def _refuse(self, fd: int, port: int) -> None:
        """Shut the connection on ``fd`` (libzmq then closes it and reports it gone): shut, never closed
        here, and only while ``fd`` is still a connection to ``port`` (the descriptor may be another's by now)."""
        self._count("remote:too_many_peers")
        self.refused_at = time.monotonic()
        _accepted_on(fd, port, shut=True)

    def _count(self, key: str) -> None:
        with self.lock:
            self.counts[key] += 1

    def _answer(self, frames: list[bytes]) -> None:
        if len(frames) < 6:
            return
        version, request_id, domain, mechanism = frames[0], frames[1], frames[2], frames[5]
        try:
            reply = self._verdict(domain, mechanism, frames)
        except Exception:  # refused, and the handler lives on to answer the next
            log.exception("cannot check a connection's key")
            reply = [b"500", b"internal error", b"", b""]
        self._zap.send_multipart([version, request_id, *reply])

    def _verdict(self, domain: bytes, mechanism: bytes, frames: list[bytes]) -> list[bytes]:
        key = z85.encode(frames[6]) if mechanism == b"CURVE" and len(frames) > 6 and len(frames[6]) == 32 else b""
        client = self.table.allowed.get(key) if domain == ZAP_DOMAIN else None
        if client is None and key and domain == ZAP_DOMAIN:
            # A client issued a moment ago is let in at once (an unknown key costs a look at the folder, no
            # read while it stays as it was); asked again whoever read it, as the loop may have meanwhile.
            # Revocations are the listener's to act on.
            self.table.reload()
            client = self.table.allowed.get(key)
        if client is None:
            self._count("remote:unauthorized")
            return [b"400", b"unknown or revoked client key", b"", b""]
        with self.lock:
            self.admitted.add(key)
        # The user id libzmq attaches to each of the connection's messages: the key, not the name (a name
        # revoked and issued again is another client).
        return [b"200", b"OK", key, b""]

    def take_counts(self) -> Counter[str]:
        """The counts since the last call."""
        with self.lock:
            counts, self.counts = self.counts, Counter()
        return counts


class RemoteListener:
    """Adds CURVE TCP endpoints to the supervisor's three sockets and keeps the client list current."""

    def __init__(self, home: str | Path, listen: str, sockets: Sequence[zmq.Socket[bytes]]) -> None:
        require_curve()
        host, port = parse_listen(listen)
        self.home = Path(home)
        self.endpoints = tcp_endpoints(host, port)
        self._sockets = list(sockets)
        self._egress = self._sockets[1]
        self._bound: list[str] = []
        self._table = _Table(self.home)
        self._next_refresh = 0.0
        self._last_logged = -_LOG_EVERY_S
        _, secret = server_keys(home)
        zap = context().socket(zmq.REP)
        zap.setsockopt(zmq.LINGER, 0)
        # The handler is bound before any CURVE endpoint exists: without one, libzmq would admit anyone.
        zap.bind(ZAP_ENDPOINT)
        monitors = [sock.get_monitor_socket(_WATCHED) for sock in self._sockets]
        self._monitors = monitors
        self._gate = _Gate(zap, monitors, self._table)
        self._gate.start()
        for sock, endpoint in zip(self._sockets, self.endpoints, strict=True):
            sock.setsockopt(zmq.CURVE_SERVER, 1)
            sock.setsockopt(zmq.CURVE_SECRETKEY, secret)
            sock.setsockopt(zmq.ZAP_DOMAIN, ZAP_DOMAIN)
            sock.setsockopt(zmq.ZAP_ENFORCE_DOMAIN, 1)  # no handler: refused, never admitted
            sock.setsockopt(zmq.HANDSHAKE_IVL, HANDSHAKE_S * 1000)
            try:
                sock.bind(endpoint)
            except zmq.ZMQError as exc:
                self.close()
                raise RemoteError(f"cannot listen on {endpoint}: {exc}") from None
            # What libzmq resolved the address to (a host name becomes an address): unbind needs it.
            bound = sock.getsockopt_string(zmq.LAST_ENDPOINT)
            self._bound.append(bound)
            self._gate.watched = {**self._gate.watched, bound.encode(): int(bound.rpartition(":")[2])}
        remember_listen(home, listen)

    def client(self, user_id: str) -> Client | None:
        """The authorized client a remote message came from, by its connection's ZAP user id; ``None``
        when that key is no longer authorized (revoked since it connected)."""
        return self._table.allowed.get(user_id.encode())

    @property
    def problem(self) -> str | None:
        """What the health should say of the remote endpoints now (too many connections), else None."""
        gate = self._gate
        if not gate.is_alive() and not gate.stopping.is_set():
            return "remote clients are refused: the key check stopped (see the log)"
        if self._table.failed is not None:
            return self._table.failed
        crowded = (time.monotonic() - gate.refused_at < _CROWDED_FOR_S
                   or max(map(gate.open, list(gate.conns)), default=0) >= gate.cap)
        return f"too many connections: the remote endpoints hold {gate.cap} each, more are refused" if crowded else None

    def refresh(self, counts: Counter[str]) -> None:
        """Add new refusal counts to ``counts``; re-read the client records when their folder changed, and
        cut off the subscriptions of removed ones. Cheap when called often (it acts at most twice a second)."""
        now = time.monotonic()
        if now < self._next_refresh:
            return
        self._next_refresh = now + REFRESH_EVERY_S
        new = self._gate.take_counts()
        if new:
            counts.update(new)
            if now - self._last_logged >= _LOG_EVERY_S:
                self._last_logged = now
                log.warning("refused remote connections: %s", ", ".join(f"{k} {v}" for k, v in sorted(new.items())))
        if not self._table.reload():
            return
        allowed = self._table.allowed
        with self._gate.lock:
            revoked = self._gate.admitted - set(allowed)
            self._gate.admitted -= revoked
        if revoked:
            self._rebind_egress()

    def _rebind_egress(self) -> None:
        """Drop every remote subscription (they come back by themselves, a revoked key is refused)."""
        endpoint = self._bound[1]
        try:
            self._egress.unbind(endpoint)
        except zmq.ZMQError as exc:
            log.error("cannot drop the subscriptions on %s to cut off a revoked client: %s", endpoint, exc)
            return
        deadline = time.monotonic() + _REBIND_TIMEOUT_S
        while True:
            try:
                self._egress.bind(endpoint)
                return
            except zmq.ZMQError as exc:
                # The old listener closes in libzmq's I/O thread; its port is free a moment later.
                if exc.errno != zmq.EADDRINUSE or time.monotonic() > deadline:
                    log.error("cannot listen on %s again after a revocation: %s (remote viewers are cut off "
                              "until the supervisor restarts)", endpoint, exc)
                    return
                time.sleep(0.01)

    def close(self) -> None:
        """Stop the ZAP handler (the sockets are closed by their owner)."""
        self._gate.stopping.set()
        if self._gate.is_alive():
            self._gate.join(timeout=2)
        for sock, monitor in zip(self._sockets, self._monitors, strict=True):
            try:
                sock.disable_monitor()
            except zmq.ZMQError:
                pass
            monitor.close(linger=0)
