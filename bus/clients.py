"""Remote clients: who may connect over CURVE, in which role, and with which signing key.

Each client is one record in ``<home>/keys/clients/NAME.json`` (0600, in a 0700 folder): its CURVE
public key, its role and its own HMAC key. The record is the server's: the role is never read from the
client's file, and the supervisor knows who sent a message from the CURVE handshake (the connection's
ZAP user id is the client's public key), never from anything the message claims. A client signs with its
own key, which no local endpoint accepts; revoking it deletes the record, which makes the key worthless
on every endpoint at once.

Roles (:data:`ROLES`), each with the rights of the one before:

- ``viewer``: the snapshot, the feeds, status and the list of runs;
- ``operator`` (the default): also pause, resume and stop, publishing into the run (a training script on
  another machine), and starting or resuming a run with the server's own configuration, overriding only
  the fields that size the work (:data:`heidi_engine.bus.config.WORK_SIZE_FIELDS`);
- ``admin``: everything a local client may do, including any override and shutting the daemon down.

A ``NAME.key`` certificate without a record is a client issued before roles: an ``operator`` that signs
with the publish key, until it is issued again.
"""

from __future__ import annotations

import json
import os
import re
import stat
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import zmq
from zmq.utils import z85

from heidi_engine.bus.connection import BusInfo
from heidi_engine.bus.keys import (
    RemoteError,
    client_host,
    keys_dir,
    new_hmac_hex,
    parse_listen,
    publish_key_hex,
    require_curve,
    server_keys,
    tcp_endpoints,
)
from heidi_engine.bus.storage import FILE_MODE, atomic_write_json, ensure_private_dir

CLIENTS_DIR = "clients"
ROLES = ("viewer", "operator", "admin")
DEFAULT_ROLE = "operator"
ROLE_HELP = {
    "viewer": "watch: snapshot, feeds, status, list of runs",
    "operator": "also pause, resume, stop, publish into the run, start or resume a run sizing only the work",
    "admin": "everything, including any configuration override and shutting the daemon down",
}
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_RECORD = ".json"
_LEGACY = ".key"


@dataclass(frozen=True)
class Client:
    """One authorized remote client, as the server records it."""

    name: str
    role: str
    public_key: bytes  # Z85, as the ZAP handler sees it
    key: bytes  # the HMAC key it signs with (and its replies are signed with)
    legacy: bool = False  # issued before roles: an operator signing with the publish key

    def at_least(self, role: str) -> bool:
        """Whether this client's role carries ``role``'s rights."""
        return ROLES.index(self.role) >= ROLES.index(role)


def clients_dir(home: str | Path) -> Path:
    """``<home>/keys/clients``: one record per authorized client."""
    return ensure_private_dir(keys_dir(home) / CLIENTS_DIR)


def check_name(name: str) -> str:
    """``name`` if it is a valid client name, else :class:`RemoteError` saying what a name may be."""
    if not _NAME.fullmatch(name):
        raise RemoteError(f"client name {name!r}: use 1-64 letters, digits, '.', '_' or '-' (not first)")
    return name


def check_role(role: str) -> str:
    """``role`` if it is one of :data:`ROLES`, else :class:`RemoteError` naming them."""
    if role not in ROLES:
        raise RemoteError(f"role {role!r}: expected one of {', '.join(ROLES)}")
    return role


def issue_client(home: str | Path, name: str, listen: str, output: Path, role: str = DEFAULT_ROLE) -> BusInfo:
    """Authorize a new client ``name`` in ``role`` and write its connection file to ``output`` (0600).

    The file holds the client's CURVE key pair, its own HMAC key and the publish key (to check what the
    supervisor sends); none of them works on a local endpoint. The endpoints are those of ``listen``; a
    wildcard host (0.0.0.0) is replaced by this machine's name (edit the file's endpoints if clients
    reach it by another name or through a tunnel).
    """
    check_name(name)
    check_role(role)
    require_curve()
    host, port = parse_listen(listen)
    folder = clients_dir(home)
    if (folder / f"{name}{_RECORD}").exists() or (folder / f"{name}{_LEGACY}").exists():
        raise RemoteError(f"a client named {name!r} exists; --revoke-client {name} first")
    if output.exists():
        raise RemoteError(f"{output} exists; remove it or choose another --output")
    server_public, _ = server_keys(home)
    client_public, client_secret = zmq.curve_keypair()
    key_hex = new_hmac_hex()
    ingress, egress, control = tcp_endpoints(client_host(host), port)
    info = BusInfo(
        ingress=ingress, egress=egress, control=control, key_hex=key_hex, session="", pid=0, home="",
        server_key=server_public.decode(), public_key=client_public.decode(), secret_key=client_secret.decode(),
        client=name, egress_key_hex=publish_key_hex(home),
    )  # fmt: skip
    atomic_write_json(output, asdict(info))
    output.chmod(FILE_MODE)
    record = {"name": name, "role": role, "public_key": client_public.decode(), "key_hex": key_hex,
              "issued_at": time.time()}  # fmt: skip
    atomic_write_json(folder / f"{name}{_RECORD}", record)
    return info


def revoke_client(home: str | Path, name: str) -> None:
    """Remove ``name``'s record; a running supervisor refuses it within a second, on every endpoint."""
    check_name(name)
    folder = clients_dir(home)
    removed = False
    for path in (folder / f"{name}{_RECORD}", folder / f"{name}{_LEGACY}"):
        try:
            path.unlink()
            removed = True
        except FileNotFoundError:
            pass
    if not removed:
        known = ", ".join(client.name for client in list_clients(home)) or "none"
        raise RemoteError(f"no client named {name!r} (authorized clients: {known})")


def list_clients(home: str | Path, problems: list[str] | None = None) -> list[Client]:
    """The authorized clients, sorted by name; a damaged record is skipped (and said in ``problems``)."""
    return sorted(load_clients(home, problems).values(), key=lambda client: client.name)


def load_clients(home: str | Path, problems: list[str] | None = None) -> dict[bytes, Client]:
    """Public key (Z85) → client, from ``clients/``. Whatever a file there holds, this returns: a record
    that is not a small regular file of the right form is skipped, with why in ``problems``."""
    folder = clients_dir(home)
    out: dict[bytes, Client] = {}
    legacy_key: bytes | None = None
    for path in sorted(folder.iterdir()):
        name = path.name.removesuffix(path.suffix)
        if path.suffix not in (_RECORD, _LEGACY) or not _NAME.fullmatch(name):
            continue
        if path.suffix == _LEGACY and (folder / f"{name}{_RECORD}").exists():
            continue  # issued again since: the record is the client
        try:
            text = _read_small(path)
            if path.suffix == _RECORD:
                client = _parse_record(text, name)
            else:
                if legacy_key is None:
                    legacy_key = bytes.fromhex(publish_key_hex(home))
                client = _parse_legacy(text, name, legacy_key)
        except Exception as exc:  # a hostile or damaged file: skipped, never the end of admission
            if problems is not None:
                problems.append(f"{path}: {exc}")
            continue
        out[client.public_key] = client
    return out


_RECORD_MAX = 4096


def _read_small(path: Path) -> str:
    """The text of ``path`` if it is a regular file of at most :data:`_RECORD_MAX` bytes (never a link or a
    FIFO, which could block the reader)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ValueError("not a regular file")
        data = os.read(fd, _RECORD_MAX + 1)
    finally:
        os.close(fd)
    if len(data) > _RECORD_MAX:
        raise ValueError(f"larger than {_RECORD_MAX} bytes")
    return data.decode("utf-8")


def _parse_record(text: str, name: str) -> Client:
    raw = json.loads(text)
    if not isinstance(raw, dict):
        raise ValueError("not a JSON object")
    role, public, key_hex = raw.get("role"), raw.get("public_key"), raw.get("key_hex")
    if role not in ROLES:
        raise ValueError(f"role {role!r} is not one of {', '.join(ROLES)}")
    if not isinstance(public, str) or len(public) != 40 or not isinstance(key_hex, str) or len(key_hex) != 64:
        raise ValueError("no valid public_key (40 Z85 characters) and key_hex (64 hex digits)")
    z85.decode(public)
    return Client(name, role, public.encode(), bytes.fromhex(key_hex))


def _parse_legacy(text: str, name: str, key: bytes) -> Client:
    found = re.search(r'^\s*public-key\s*=\s*"([^"]{40})"\s*$', text, re.MULTILINE)
    if found is None:
        raise ValueError("no public-key of 40 Z85 characters")
    public = found.group(1)
    z85.decode(public)
    return Client(name, DEFAULT_ROLE, public.encode(), key, legacy=True)
