"""Remote clients over TCP, encrypted and authenticated with ZeroMQ CURVE.

Keys live in ``<home>/keys/`` (0700): the supervisor's key pair (``server.key``, ``server.key_secret``,
in ``zmq.auth``'s certificate format, 0600), the bus HMAC key that issued client files hold
(``bus.hmac``), the last ``--listen`` address and ``clients/NAME.key``, the public key of each
authorized client. A client's secret key is written only into its connection file, never kept here.

The listening side (:class:`RemoteListener`) binds the TCP endpoints next to the local ones, after
setting CURVE on the socket (libzmq copies a socket's options into each endpoint when it is bound, so
the ipc endpoints stay plain). A ZAP handler thread admits a connection only when its public key is in
``clients/``, and counts every refusal. The folder is re-read within a second of a change. A removed
key also unbinds and rebinds the TCP endpoints: ZAP is consulted once per connection, and a PUB socket
cannot refuse one subscriber, so dropping every TCP connection (all reconnect by themselves; the
revoked one is then refused) is the only way to cut off a client that is already connected.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import secrets
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

import zmq
import zmq.auth
from zmq.utils import z85
from zmq.utils.monitor import recv_monitor_message

from heidi_engine.bus.connection import BusInfo, ConnectionFileError
from heidi_engine.bus.context import context
from heidi_engine.bus.storage import FILE_MODE, atomic_write_json, ensure_private_dir, read_json

KEYS_DIR = "keys"
CLIENTS_DIR = "clients"
HMAC_FILE = "bus.hmac"
LISTEN_FILE = "listen.json"
ZAP_DOMAIN = b"autotrain"
ZAP_ENDPOINT = "inproc://zeromq.zap.01"
REFRESH_EVERY_S = 0.5
_LOG_EVERY_S = 60.0
_RELOAD_GAP_S = 0.2
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_HANDSHAKE_FAILED = zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
# Nothing unauthenticated may hold the daemon: a TCP peer that has not finished its CURVE handshake
# within _HANDSHAKE_S is dropped (and counted as a bad handshake), and while more than MAX_PEERS TCP
# connections are open over the three endpoints the supervisor's health says so.
_HANDSHAKE_S = 5
MAX_PEERS = 512
_WATCHED = _HANDSHAKE_FAILED | zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED
_REBIND_TIMEOUT_S = 5.0


log = logging.getLogger(__name__)


class RemoteError(Exception):
    """A remote-access request that cannot be carried out; the message says what was wrong."""


# -- addresses and key files ---------------------------------------------------------------------------


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` as (host, port); the three endpoints use PORT, PORT+1 and PORT+2."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise RemoteError(f"--listen {text!r}: expected HOST:PORT, e.g. 0.0.0.0:5700 or 10.0.0.5:5700")
    port = int(port_text)
    if not 1 <= port <= 65533:
        raise RemoteError(f"--listen {text!r}: PORT must be 1..65533 (PORT..PORT+2 are used)")
    if host.startswith("[") or ":" in host:
        raise RemoteError(f"--listen {text!r}: IPv6 addresses are not supported; use an IPv4 address or a host name")
    if not re.fullmatch(r"[A-Za-z0-9.-]+", host):
        raise RemoteError(f"--listen {text!r}: {host!r} is not a host name or IPv4 address")
    return host, port


def tcp_endpoints(host: str, port: int) -> tuple[str, str, str]:
    """Ingress, egress and control on ``host`` at PORT, PORT+1, PORT+2."""
    ingress, egress, control = (f"tcp://{host}:{port + i}" for i in range(3))
    return ingress, egress, control


def keys_dir(home: str | Path) -> Path:
    """``<home>/keys`` (0700, created on demand)."""
    return ensure_private_dir(Path(home) / KEYS_DIR)


def clients_dir(home: str | Path) -> Path:
    """``<home>/keys/clients``: one ``NAME.key`` (a public key) per authorized client."""
    return ensure_private_dir(keys_dir(home) / CLIENTS_DIR)


def _require_curve() -> None:
    if not zmq.has("curve"):
        raise RemoteError(f"this libzmq ({zmq.zmq_version()}) was built without CURVE; install a pyzmq wheel "
                          "that bundles it (pip install --force-reinstall pyzmq)")


def _check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise RemoteError(f"client name {name!r}: use 1-64 letters, digits, '.', '_' or '-' (not first)")
    return name


def server_keys(home: str | Path) -> tuple[bytes, bytes]:
    """The supervisor's CURVE (public, secret) key pair, created 0600 on first use."""
    folder = keys_dir(home)
    secret_file = folder / "server.key_secret"
    if not secret_file.exists():
        public_path, secret_path = zmq.auth.create_certificates(str(folder), "server")
        for path in (public_path, secret_path):
            Path(path).chmod(FILE_MODE)
    _check_private(secret_file)
    public, secret = zmq.auth.load_certificate(str(secret_file))
    if secret is None:
        raise RemoteError(f"{secret_file} holds no secret key")
    return public, secret


def _check_private(path: Path) -> None:
    """RemoteError unless ``path`` is this user's and no one else's to read (as ssh requires of a key)."""
    try:
        st = path.stat()
    except OSError as exc:
        raise RemoteError(f"cannot read {path}: {exc.strerror or exc}") from None
    if st.st_mode & 0o077 or st.st_uid != os.geteuid():
        raise RemoteError(f"{path} is mode {st.st_mode & 0o777:04o}, owner uid {st.st_uid}: a secret key must be "
                          f"this user's alone (chmod 600 {path}); refusing to use it")


def hmac_key_hex(home: str | Path) -> str:
    """The bus HMAC key kept for remote clients (their files hold it), created 0600 on first use."""
    path = keys_dir(home) / HMAC_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "w", encoding="ascii") as out:
            out.write(secrets.token_hex(32) + "\n")
    _check_private(path)
    try:
        text = path.read_text(encoding="ascii").strip()
        if len(text) != 64:
            raise ValueError("not 64 hex digits")
        bytes.fromhex(text)
    except (OSError, ValueError) as exc:
        raise RemoteError(f"cannot read the bus key {path}: {exc}") from None
    return text


def remember_listen(home: str | Path, listen: str) -> None:
    """Record the last ``--listen`` address (``--issue-client`` writes it into client files)."""
    atomic_write_json(keys_dir(home) / LISTEN_FILE, {"listen": listen})


def last_listen(home: str | Path) -> str | None:
    """The ``--listen`` address of the last supervisor that listened on this home, if any."""
    try:
        raw = read_json(keys_dir(home) / LISTEN_FILE)
    except (OSError, ValueError):
        return None
    value = raw.get("listen") if isinstance(raw, dict) else None
    return value if isinstance(value, str) else None


def _client_host(host: str) -> str:
    """The host a client dials: a wildcard bind address is not one."""
    try:
        if ipaddress.ip_address(host).is_unspecified:
            return socket.getfqdn()
    except ValueError:
        pass
    return host


# -- issuing and revoking ------------------------------------------------------------------------------


def issue_client(home: str | Path, name: str, listen: str, output: Path) -> BusInfo:
    """Authorize a new client ``name`` and write its connection file to ``output`` (0600).

    The endpoints are those of ``listen``; a wildcard host (0.0.0.0) is replaced by this machine's name
    (edit the file's endpoints if clients reach it by another name or through a tunnel).
    """
    _check_name(name)
    _require_curve()
    host, port = parse_listen(listen)
    public_file = clients_dir(home) / f"{name}.key"
    if public_file.exists():
        raise RemoteError(f"a client named {name!r} exists ({public_file}); --revoke-client {name} first")
    if output.exists():
        raise RemoteError(f"{output} exists; remove it or choose another --output")
    server_public, _ = server_keys(home)
    client_public, client_secret = zmq.curve_keypair()
    ingress, egress, control = tcp_endpoints(_client_host(host), port)
    info = BusInfo(
        ingress=ingress, egress=egress, control=control, key_hex=hmac_key_hex(home), session="", pid=0,
        home="", server_key=server_public.decode(), public_key=client_public.decode(),
        secret_key=client_secret.decode(), client=name,
    )  # fmt: skip
    atomic_write_json(output, asdict(info))
    output.chmod(FILE_MODE)
    staging = public_file.with_suffix(".tmp")
    staging.write_text(
        f"# AutoTrain supervisor client {name}\nmetadata\ncurve\n    public-key = \"{client_public.decode()}\"\n",
        encoding="ascii",
    )
    staging.replace(public_file)
    return info


def revoke_client(home: str | Path, name: str) -> None:
    """Remove ``name``'s public key; a running supervisor drops the client within a second."""
    _check_name(name)
    path = clients_dir(home) / f"{name}.key"
    try:
        path.unlink()
    except FileNotFoundError:
        known = ", ".join(list_clients(home)) or "none"
        raise RemoteError(f"no client named {name!r} (authorized clients: {known})") from None


def list_clients(home: str | Path) -> list[str]:
    """The names of the authorized clients, sorted."""
    return sorted(path.stem for path in clients_dir(home).glob("*.key"))


def authorized_keys(home: str | Path) -> dict[bytes, str]:
    """Public key (Z85) → client name, from ``clients/``; a damaged file is skipped."""
    out: dict[bytes, str] = {}
    for path in clients_dir(home).glob("*.key"):
        try:
            public, _ = zmq.auth.load_certificate(str(path))
        except (OSError, ValueError):
            continue
        out[public] = path.stem
    return out


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
    """The ZAP handler: admits known public keys, counts refusals and failed handshakes."""

    def __init__(
        self, zap: zmq.Socket[bytes], monitors: Sequence[zmq.Socket[bytes]], reload: Callable[[], dict[bytes, str]]
    ) -> None:
        super().__init__(name="bus-curve-gate", daemon=True)
        self.allowed: dict[bytes, str] = reload()
        self.admitted: set[bytes] = set()  # keys let in since start: a revoked one among them means a cut
        self._reload = reload
        self._reloaded_at = time.monotonic()
        self.counts: Counter[str] = Counter()
        self.open = 0  # TCP connections accepted and not yet gone
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
                    else:
                        event = recv_monitor_message(sock)["event"]
                        if event & _HANDSHAKE_FAILED:
                            self._count("remote:bad_handshake")
                        elif event == zmq.EVENT_ACCEPTED:
                            self.open += 1
                        elif event == zmq.EVENT_DISCONNECTED:
                            self.open = max(0, self.open - 1)
        finally:
            for sock in (self._zap, *self._monitors):
                sock.close(linger=0)

    def _count(self, key: str) -> None:
        with self.lock:
            self.counts[key] += 1

    def _answer(self, frames: list[bytes]) -> None:
        if len(frames) < 6:
            return
        version, request_id, domain, mechanism = frames[0], frames[1], frames[2], frames[5]
        key = z85.encode(frames[6]) if mechanism == b"CURVE" and len(frames) > 6 and len(frames[6]) == 32 else b""
        name = self.allowed.get(key) if domain == ZAP_DOMAIN else None
        if name is None and key and domain == ZAP_DOMAIN and time.monotonic() - self._reloaded_at >= _RELOAD_GAP_S:
            # A client issued a moment ago is let in at once (a flood of unknown keys reads the folder at
            # most every _RELOAD_GAP_S); revocations are the listener's to find, as it must cut connections.
            self._reloaded_at = time.monotonic()
            self.allowed = self._reload()
            name = self.allowed.get(key)
        if name is None:
            self._count("remote:unauthorized")
            reply = [version, request_id, b"400", b"unknown or revoked client key", b"", b""]
        else:
            with self.lock:
                self.admitted.add(key)
            reply = [version, request_id, b"200", b"OK", name.encode(), b""]
        self._zap.send_multipart(reply)

    def take_counts(self) -> Counter[str]:
        """The counts since the last call."""
        with self.lock:
            counts, self.counts = self.counts, Counter()
        return counts


class RemoteListener:
    """Adds CURVE TCP endpoints to the supervisor's three sockets and keeps the door list current."""

    def __init__(self, home: str | Path, listen: str, sockets: Sequence[zmq.Socket[bytes]]) -> None:
        _require_curve()
        host, port = parse_listen(listen)
        self.home = Path(home)
        self.endpoints = tcp_endpoints(host, port)
        self._sockets = list(sockets)
        self._bound: list[str] = []
        self._folder = clients_dir(home)
        self._stamp = self._folder_stamp()
        self._next_refresh = 0.0
        self._last_logged = -_LOG_EVERY_S
        _, secret = server_keys(home)
        zap = context().socket(zmq.REP)
        zap.setsockopt(zmq.LINGER, 0)
        # The handler is bound before any CURVE endpoint exists: without one, libzmq would admit anyone.
        zap.bind(ZAP_ENDPOINT)
        monitors = [sock.get_monitor_socket(_WATCHED) for sock in self._sockets]
        self._gate = _Gate(zap, monitors, lambda: authorized_keys(home))
        self._gate.start()
        for sock, endpoint in zip(self._sockets, self.endpoints, strict=True):
            sock.setsockopt(zmq.CURVE_SERVER, 1)
            sock.setsockopt(zmq.CURVE_SECRETKEY, secret)
            sock.setsockopt(zmq.ZAP_DOMAIN, ZAP_DOMAIN)
            sock.setsockopt(zmq.HANDSHAKE_IVL, _HANDSHAKE_S * 1000)
            try:
                sock.bind(endpoint)
            except zmq.ZMQError as exc:
                self.close()
                raise RemoteError(f"cannot listen on {endpoint}: {exc}") from None
            # What libzmq resolved the address to (a host name becomes an address): unbind needs it.
            self._bound.append(sock.getsockopt_string(zmq.LAST_ENDPOINT))
        remember_listen(home, listen)

    @property
    def problem(self) -> str | None:
        """What the health should say of the remote endpoints now (too many connections), else None."""
        return f"too many connections: over {MAX_PEERS} open to the remote endpoints" if self._gate.open > MAX_PEERS else None

    def _folder_stamp(self) -> tuple[int, ...]:
        try:
            stat = self._folder.stat()
        except OSError:
            return ()
        return (stat.st_mtime_ns, stat.st_ino)

    def refresh(self, counts: Counter[str]) -> None:
        """Add new refusal counts to ``counts``; re-read the client keys when their folder changed, and cut
        off the connections of removed ones. Cheap when called often (it acts at most twice a second)."""
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
        stamp = self._folder_stamp()
        if stamp == self._stamp:
            return
        self._stamp = stamp
        allowed = authorized_keys(self.home)
        self._gate.allowed = allowed
        with self._gate.lock:
            revoked = self._gate.admitted - set(allowed)
            self._gate.admitted -= revoked
        if revoked:
            self._rebind()

    def _rebind(self) -> None:
        for sock, endpoint in zip(self._sockets, self._bound, strict=True):
            try:
                sock.unbind(endpoint)
            except zmq.ZMQError as exc:
                log.error("cannot drop the connections on %s to cut off a revoked client: %s", endpoint, exc)
                continue
            deadline = time.monotonic() + _REBIND_TIMEOUT_S
            while True:
                try:
                    sock.bind(endpoint)
                    break
                except zmq.ZMQError as exc:
                    # The old listener closes in libzmq's I/O thread; its port is free a moment later.
                    if exc.errno != zmq.EADDRINUSE or time.monotonic() > deadline:
                        log.error("cannot listen on %s again after a revocation: %s (remote clients are "
                                  "cut off until the supervisor restarts)", endpoint, exc)
                        break
                    time.sleep(0.01)

    def close(self) -> None:
        """Stop the ZAP handler (the sockets are closed by their owner)."""
        self._gate.stopping.set()
        if self._gate.is_alive():
            self._gate.join(timeout=2)
