"""The connection file ``<home>/run/bus.json``: how clients find the supervisor (DESIGN §3).

It holds the three endpoints, the HMAC key, the supervisor session id and pid. It is written 0600 in a
0700 folder, and a client that cannot read it has no way to sign a command.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from heidi_engine.bus.storage import atomic_write_json, ensure_private_dir, read_json

RUN_DIR = "run"
CONNECTION_FILE = "bus.json"
# sockaddr_un.sun_path is 108 bytes; leave room for the socket file names.
_IPC_PATH_MAX = 100


class ConnectionFileError(Exception):
    """No usable connection file: no supervisor has run here, or the file is damaged."""


@dataclass(frozen=True)
class BusInfo:
    """What a client needs to talk to one supervisor session."""

    ingress: str
    egress: str
    control: str
    key_hex: str
    session: str
    pid: int
    home: str

    @property
    def key(self) -> bytes:
        """The HMAC key as bytes."""
        return bytes.fromhex(self.key_hex)


def run_dir(home: str | os.PathLike[str]) -> Path:
    """``<home>/run``."""
    return Path(home) / RUN_DIR


def connection_path(home: str | os.PathLike[str]) -> Path:
    """``<home>/run/bus.json``."""
    return run_dir(home) / CONNECTION_FILE


def socket_dir(home: str | os.PathLike[str]) -> Path:
    """Where the ipc sockets live: ``<home>/run``, or a short private folder when that path is too long."""
    own = run_dir(home).resolve()
    if len(str(own)) + 12 <= _IPC_PATH_MAX:
        return own
    digest = hashlib.sha256(str(own).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"autotrain-{os.getuid()}-{digest}"


def new_bus_info(home: str | os.PathLike[str], pid: int, *, tcp_port: int | None = None) -> BusInfo:
    """Fresh endpoints, key and session for a supervisor starting on ``home``.

    ipc:// by default; with ``tcp_port``, three consecutive ports on 127.0.0.1 (never 0.0.0.0).
    """
    if tcp_port is not None:
        ingress, egress, control = (f"tcp://127.0.0.1:{tcp_port + i}" for i in range(3))
    else:
        sockets = ensure_private_dir(socket_dir(home))
        ingress, egress, control = (f"ipc://{sockets / name}" for name in ("ingress", "egress", "control"))
    return BusInfo(
        ingress=ingress,
        egress=egress,
        control=control,
        key_hex=secrets.token_hex(32),
        session=secrets.token_hex(8),
        pid=pid,
        home=str(Path(home).resolve()),
    )


def write_bus_info(home: str | os.PathLike[str], info: BusInfo) -> Path:
    """Write ``bus.json`` atomically, 0600, in a 0700 ``run/``."""
    ensure_private_dir(run_dir(home))
    path = connection_path(home)
    atomic_write_json(path, asdict(info))
    return path


def read_bus_info(home: str | os.PathLike[str]) -> BusInfo:
    """Read ``bus.json``; :class:`ConnectionFileError` naming the problem when it is missing or damaged."""
    path = connection_path(home)
    try:
        raw = read_json(path)
    except FileNotFoundError:
        raise ConnectionFileError(f"no supervisor connection file at {path} (is autotrain-supervisor running?)") from None
    except (OSError, ValueError) as exc:
        raise ConnectionFileError(f"cannot read {path}: {exc}") from None
    fields = {"ingress", "egress", "control", "key_hex", "session", "pid", "home"}
    if not isinstance(raw, dict) or set(raw) != fields:
        raise ConnectionFileError(f"{path} is not a connection file of this version")
    try:
        info = BusInfo(**raw)
        _ = info.key
    except (TypeError, ValueError) as exc:
        raise ConnectionFileError(f"{path}: {exc}") from None
    return info


def remove_bus_info(home: str | os.PathLike[str], info: BusInfo) -> None:
    """Remove ``bus.json`` and the ipc socket files of ``info`` (only if the file is still ours)."""
    path = connection_path(home)
    try:
        if read_json(path).get("session") == info.session:
            path.unlink()
    except (OSError, ValueError, AttributeError):
        pass
    for endpoint in (info.ingress, info.egress, info.control):
        if endpoint.startswith("ipc://"):
            try:
                os.unlink(endpoint[len("ipc://"):])
            except OSError:
                pass
    sockets = socket_dir(home)
    if sockets != run_dir(home).resolve():
        try:
            sockets.rmdir()
        except OSError:
            pass
