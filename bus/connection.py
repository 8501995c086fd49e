"""The connection file ``<home>/run/bus.json``: how clients find the supervisor.

It holds the three endpoints, the HMAC key, the supervisor session id and pid (and, while the supervisor
listens for remote clients, the publish key its egress is signed with). It is written 0600 in a
0700 folder, and a client that cannot read it has no way to sign a command.

A client on another machine (or as another user) uses a *client connection file* instead, issued by
``autotrain-supervisor --issue-client NAME``: the supervisor's TCP endpoints, its CURVE public key, the
client's own CURVE key pair and the HMAC key. ``AUTOTRAIN_BUS=FILE`` (every client's ``--bus FILE``)
makes :func:`read_bus_info` return that file's contents instead of the home's ``bus.json``.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import tempfile
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from heidi_engine.bus.storage import atomic_write_json, claim_private_dir, ensure_private_dir, read_json

BUS_ENV = "AUTOTRAIN_BUS"
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
    # The supervisor's remote listening address (HOST:PORT), when it has one.
    listen: str = ""
    # A client connection file's CURVE keys (Z85 text): the supervisor's public key, the client's pair.
    server_key: str = ""
    public_key: str = ""
    secret_key: str = ""
    client: str = ""
    # What egress is signed with, when not the HMAC key: a listening supervisor's publish key, which its
    # remote clients hold to check what they receive (each signs with a key of its own).
    egress_key_hex: str = ""

    @property
    def key(self) -> bytes:
        """The HMAC key as bytes: what this side signs with (and its replies are signed with)."""
        return bytes.fromhex(self.key_hex)

    @property
    def egress_key(self) -> bytes:
        """The key egress messages are signed with."""
        return bytes.fromhex(self.egress_key_hex or self.key_hex)

    @property
    def remote(self) -> bool:
        """True for a client connection file: TCP with CURVE, no local home, no local pid."""
        return bool(self.server_key)


def run_dir(home: str | os.PathLike[str]) -> Path:
    """``<home>/run``."""
    return Path(home) / RUN_DIR


def connection_path(home: str | os.PathLike[str]) -> Path:
    """``<home>/run/bus.json``."""
    return run_dir(home) / CONNECTION_FILE


def socket_dir(home: str | os.PathLike[str]) -> Path:
    """Where the ipc sockets live: ``<home>/run``, or a short private folder when that path is too long
    (in ``$XDG_RUNTIME_DIR``, this user's own, where there is one; else the temp folder)."""
    own = run_dir(home).resolve()
    if len(str(own)) + 12 <= _IPC_PATH_MAX:
        return own
    digest = hashlib.sha256(str(own).encode()).hexdigest()[:16]
    runtime = os.environ.get("XDG_RUNTIME_DIR", "")
    if runtime and Path(runtime).is_dir() and len(runtime) + 40 <= _IPC_PATH_MAX:
        return Path(runtime) / f"autotrain-{digest}"
    return Path(tempfile.gettempdir()) / f"autotrain-{os.getuid()}-{digest}"


def new_bus_info(
    home: str | os.PathLike[str],
    pid: int,
    *,
    tcp_port: int | None = None,
    listen: str = "",
    egress_key_hex: str = "",
) -> BusInfo:
    """Fresh endpoints, key and session for a supervisor starting on ``home``.

    ipc:// by default; with ``tcp_port``, three consecutive ports on 127.0.0.1 (never 0.0.0.0).
    ``listen`` (HOST:PORT) records the CURVE endpoints the server adds; ``egress_key_hex`` is then the
    publish key that issued client files hold. The HMAC key is always fresh: no client file holds it.
    """
    if tcp_port is not None:
        ingress, egress, control = (f"tcp://127.0.0.1:{tcp_port + i}" for i in range(3))
    else:
        folder = socket_dir(home)
        # The home's own run/ is this user's; a short folder elsewhere must be claimed, never taken as found.
        sockets = ensure_private_dir(folder) if folder == run_dir(home).resolve() else claim_private_dir(folder)
        ingress, egress, control = (f"ipc://{sockets / name}" for name in ("ingress", "egress", "control"))
    return BusInfo(
        ingress=ingress,
        egress=egress,
        control=control,
        key_hex=secrets.token_hex(32),
        session=secrets.token_hex(8),
        pid=pid,
        home=str(Path(home).resolve()),
        listen=listen,
        egress_key_hex=egress_key_hex,
    )


def write_bus_info(home: str | os.PathLike[str], info: BusInfo) -> Path:
    """Write ``bus.json`` atomically, 0600, in a 0700 ``run/``."""
    ensure_private_dir(run_dir(home))
    path = connection_path(home)
    atomic_write_json(path, asdict(info))
    return path


_REQUIRED = frozenset({"ingress", "egress", "control", "key_hex", "session", "pid", "home"})
_CLIENT_KEYS = ("server_key", "public_key", "secret_key")


def read_bus_info(home: str | os.PathLike[str]) -> BusInfo:
    """Read ``bus.json`` of ``home`` — or the connection file named by ``AUTOTRAIN_BUS`` when it is set
    (a client file, or a home's ``run/bus.json``); :class:`ConnectionFileError` naming the problem when
    the file is missing or damaged."""
    bus_file = os.environ.get(BUS_ENV)
    if bus_file:
        return read_connection_file(bus_file)
    path = connection_path(home)
    try:
        raw = read_json(path)
    except FileNotFoundError:
        raise ConnectionFileError(f"no supervisor connection file at {path} (is autotrain-supervisor running?)") from None
    except (OSError, ValueError) as exc:
        raise ConnectionFileError(f"cannot read {path}: {exc}") from None
    return _bus_info(raw, path)


def read_connection_file(path: str | os.PathLike[str]) -> BusInfo:
    """Read a connection file by its path: a client file (checked as :func:`read_client_file` does) or
    a home's ``run/bus.json``; :class:`ConnectionFileError` naming the problem."""
    path = Path(path).expanduser()
    raw = _read(path, "no supervisor connection file at {path}", "the connection file")
    if isinstance(raw, dict) and any(raw.get(name) for name in _CLIENT_KEYS):
        return _client_info(raw, path)
    return _bus_info(raw, path)


def read_client_file(path: str | os.PathLike[str]) -> BusInfo:
    """Read a client connection file (from ``--issue-client``); :class:`ConnectionFileError` naming the problem."""
    path = Path(path).expanduser()
    missing = "no client connection file at {path} (see autotrain-supervisor --issue-client)"
    return _client_info(_read(path, missing, "the client connection file"), path)


def _read(path: Path, missing: str, what: str) -> object:
    """The JSON of ``path``; :class:`ConnectionFileError` with ``missing`` (formatted with the path) when
    there is no such file, naming ``what`` could not be read otherwise."""
    try:
        return read_json(path)
    except FileNotFoundError:
        raise ConnectionFileError(missing.format(path=path)) from None
    except (OSError, ValueError) as exc:
        raise ConnectionFileError(f"cannot read {what} {path}: {exc}") from None


def _client_info(raw: object, path: Path) -> BusInfo:
    info = _bus_info(raw, path)
    missing = [name for name in _CLIENT_KEYS if len(getattr(info, name)) != 40]
    if missing:
        raise ConnectionFileError(f"{path} is not a client connection file: no valid {', '.join(missing)} "
                                  "(40 Z85 characters each)")
    if not all(e.startswith("tcp://") for e in (info.ingress, info.egress, info.control)):
        raise ConnectionFileError(f"{path}: a client connection file names tcp:// endpoints only")
    return info


def _bus_info(raw: object, path: Path) -> BusInfo:
    known = {f.name for f in fields(BusInfo)}
    if not isinstance(raw, dict) or not _REQUIRED <= set(raw) <= known:
        raise ConnectionFileError(f"{path} is not a connection file of this version")
    try:
        info = BusInfo(**raw)
        _ = info.key, info.egress_key
    except (TypeError, ValueError) as exc:
        raise ConnectionFileError(f"{path}: {exc}") from None
    bad = [name for name in known - {"pid"} if not isinstance(getattr(info, name), str)]
    if bad or not isinstance(info.pid, int):
        raise ConnectionFileError(f"{path}: wrong type for {', '.join(sorted(bad)) or 'pid'}")
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


def use_bus_file(path: str | os.PathLike[str]) -> BusInfo:
    """``--bus FILE``: check the connection file and make every bus client of this process (and of its
    children) use it, as ``AUTOTRAIN_BUS=FILE`` does. :class:`ConnectionFileError` if it is unusable."""
    resolved = Path(path).expanduser().resolve()
    info = read_connection_file(resolved)
    os.environ[BUS_ENV] = str(resolved)
    return info

