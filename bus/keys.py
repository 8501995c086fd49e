"""The remote bus's key folder ``<home>/keys/`` (0700) and the addresses remote clients dial.

It holds the supervisor's CURVE key pair (``server.key``, ``server.key_secret``, in ``zmq.auth``'s
certificate format, 0600), the *publish key* (``bus.hmac``, 0600: what the supervisor signs its egress
with while it listens, so that remote subscribers can check what they receive; every client file holds
it, and it is accepted on no input but a client's issued before roles, over that client's own CURVE
connection), the last ``--listen`` address, and ``clients/`` (see
:mod:`heidi_engine.bus.clients`). A secret key file that others could read is refused, as ssh does.
"""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
import socket
from pathlib import Path

import zmq
import zmq.auth

from heidi_engine.bus.storage import FILE_MODE, atomic_write_json, ensure_private_dir, read_json

KEYS_DIR = "keys"
PUBLISH_KEY_FILE = "bus.hmac"
LISTEN_FILE = "listen.json"


class RemoteError(Exception):
    """A remote-access request that cannot be carried out; the message says what was wrong."""


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


def client_host(host: str) -> str:
    """The host a client dials: a wildcard bind address is not one."""
    try:
        if ipaddress.ip_address(host).is_unspecified:
            return socket.getfqdn()
    except ValueError:
        pass
    return host


def keys_dir(home: str | Path) -> Path:
    """``<home>/keys`` (0700, created on demand)."""
    return ensure_private_dir(Path(home) / KEYS_DIR)


def require_curve() -> None:
    """RemoteError unless this libzmq can encrypt (CURVE)."""
    if not zmq.has("curve"):
        raise RemoteError(f"this libzmq ({zmq.zmq_version()}) was built without CURVE; install a pyzmq wheel "
                          "that bundles it (pip install --force-reinstall pyzmq)")


def check_private(path: Path) -> None:
    """RemoteError unless ``path`` is this user's and no one else's to read (as ssh requires of a key)."""
    try:
        st = path.stat()
    except OSError as exc:
        raise RemoteError(f"cannot read {path}: {exc.strerror or exc}") from None
    if st.st_mode & 0o077 or st.st_uid != os.geteuid():
        raise RemoteError(f"{path} is mode {st.st_mode & 0o777:04o}, owner uid {st.st_uid}: a secret key must be "
                          f"this user's alone (chmod 600 {path}); refusing to use it")


def server_keys(home: str | Path) -> tuple[bytes, bytes]:
    """The supervisor's CURVE (public, secret) key pair, created 0600 on first use."""
    folder = keys_dir(home)
    secret_file = folder / "server.key_secret"
    if not secret_file.exists():
        public_path, secret_path = zmq.auth.create_certificates(str(folder), "server")
        for path in (public_path, secret_path):
            Path(path).chmod(FILE_MODE)
    check_private(secret_file)
    public, secret = zmq.auth.load_certificate(str(secret_file))
    if secret is None:
        raise RemoteError(f"{secret_file} holds no secret key")
    return public, secret


def new_hmac_hex() -> str:
    """A fresh HMAC key (256 bits) as hex."""
    return secrets.token_hex(32)


def publish_key_hex(home: str | Path) -> str:
    """The publish key (hex): what a listening supervisor signs its egress with, created 0600 on first use.

    Remote clients hold it to check what they receive; it is accepted on no input. Clients issued before
    roles existed also sign with it (see :mod:`heidi_engine.bus.clients`).
    """
    path = keys_dir(home) / PUBLISH_KEY_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "w", encoding="ascii") as out:
            out.write(new_hmac_hex() + "\n")
    check_private(path)
    try:
        text = path.read_text(encoding="ascii").strip()
        if len(text) != 64:
            raise ValueError("not 64 hex digits")
        bytes.fromhex(text)
    except (OSError, ValueError) as exc:
        raise RemoteError(f"cannot read the publish key {path}: {exc}") from None
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
