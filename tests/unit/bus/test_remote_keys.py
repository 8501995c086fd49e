"""Remote-client keys and files: the listen address, issuing, revoking, and reading a client file."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import zmq

from heidi_engine.bus.clients import Client, issue_client, list_clients, load_clients, revoke_client
from heidi_engine.bus.connection import (
    BUS_ENV,
    ConnectionFileError,
    new_bus_info,
    read_bus_info,
    read_client_file,
    use_bus_file,
    write_bus_info,
)
from heidi_engine.bus.keys import RemoteError, parse_listen, publish_key_hex, server_keys


def _names(home: Path) -> list[str]:
    return [client.name for client in list_clients(home)]


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("text", ["127.0.0.1:5700", "gpu1.lan:1", "0.0.0.0:65533"])
def test_a_listen_address_is_host_and_port(text: str) -> None:
    host, port = parse_listen(text)
    assert f"{host}:{port}" == text


@pytest.mark.parametrize(
    ("text", "says"),
    [("5700", "expected HOST:PORT"), ("host:", "expected HOST:PORT"), ("host:65534", "1..65533"),
     ("[::1]:5700", "IPv6"), ("a b:5700", "not a host name"), ("h:0", "1..65533")],
)  # fmt: skip
def test_a_bad_listen_address_is_refused_saying_why(text: str, says: str) -> None:
    with pytest.raises(RemoteError, match=says):
        parse_listen(text)


def test_an_issued_file_holds_endpoints_its_own_keys_and_the_publish_key(tmp_path: Path) -> None:
    out = tmp_path / "laptop.bus.json"
    info = issue_client(tmp_path, "laptop", "127.0.0.1:5700", out)
    other = issue_client(tmp_path, "desk", "127.0.0.1:5700", tmp_path / "desk.bus.json", "viewer")
    assert _mode(out) == 0o600
    read = read_client_file(out)
    assert read == info and read.remote and read.client == "laptop"
    assert (read.ingress, read.egress, read.control) == ("tcp://127.0.0.1:5700", "tcp://127.0.0.1:5701",
                                                         "tcp://127.0.0.1:5702")  # fmt: skip
    # Each client signs with a key of its own; what they share checks egress only.
    assert read.key_hex != other.key_hex and read.key_hex != publish_key_hex(tmp_path)
    assert read.egress_key_hex == other.egress_key_hex == publish_key_hex(tmp_path)
    assert read.server_key == server_keys(tmp_path)[0].decode()
    clients = load_clients(tmp_path)
    assert clients[read.public_key.encode()] == Client("laptop", "operator", read.public_key.encode(), read.key)
    assert clients[other.public_key.encode()].role == "viewer"
    assert _mode(tmp_path / "keys" / "clients" / "laptop.json") == 0o600
    # The client's secret stays in its file only; the server's secret is 0600 in a 0700 folder.
    keys = tmp_path / "keys"
    assert read.secret_key not in "".join(p.read_text() for p in keys.rglob("*") if p.is_file())
    assert _mode(keys) == 0o700 and _mode(keys / "server.key_secret") == 0o600 and _mode(keys / "bus.hmac") == 0o600


def test_a_wildcard_listen_address_is_not_what_the_client_dials(tmp_path: Path) -> None:
    info = issue_client(tmp_path, "laptop", "0.0.0.0:5700", tmp_path / "f.json")
    assert "0.0.0.0" not in info.control and info.control.endswith(":5702")


def test_issuing_refuses_a_taken_name_an_existing_file_and_a_bad_name(tmp_path: Path) -> None:
    issue_client(tmp_path, "laptop", "127.0.0.1:5700", tmp_path / "a.json")
    with pytest.raises(RemoteError, match="--revoke-client laptop first"):
        issue_client(tmp_path, "laptop", "127.0.0.1:5700", tmp_path / "b.json")
    with pytest.raises(RemoteError, match="exists"):
        issue_client(tmp_path, "other", "127.0.0.1:5700", tmp_path / "a.json")
    with pytest.raises(RemoteError, match="client name"):
        issue_client(tmp_path, "../evil", "127.0.0.1:5700", tmp_path / "c.json")
    with pytest.raises(RemoteError, match="role 'root': expected one of viewer, operator, admin"):
        issue_client(tmp_path, "c", "127.0.0.1:5700", tmp_path / "c.json", "root")
    assert _names(tmp_path) == ["laptop"]


def test_a_client_issued_before_roles_is_an_operator_signing_with_the_publish_key(tmp_path: Path) -> None:
    public, _ = zmq.curve_keypair()
    legacy = tmp_path / "keys" / "clients"
    legacy.mkdir(parents=True)
    (legacy / "old.key").write_text(f'metadata\ncurve\n    public-key = "{public.decode()}"\n')
    (client,) = list_clients(tmp_path)
    assert (client.name, client.role, client.legacy, client.public_key) == ("old", "operator", True, public)
    assert client.key == bytes.fromhex(publish_key_hex(tmp_path))
    revoke_client(tmp_path, "old")
    assert list_clients(tmp_path) == [] and not (legacy / "old.key").exists()


def test_revoking_removes_the_key_and_an_unknown_name_lists_the_known(tmp_path: Path) -> None:
    for name in ("a", "b"):
        issue_client(tmp_path, name, "127.0.0.1:5700", tmp_path / f"{name}.json")
    revoke_client(tmp_path, "a")
    assert _names(tmp_path) == ["b"] and [c.name for c in load_clients(tmp_path).values()] == ["b"]
    with pytest.raises(RemoteError, match=r"no client named 'a' \(authorized clients: b\)"):
        revoke_client(tmp_path, "a")


def test_the_publish_key_and_server_keys_stay_the_same_across_calls(tmp_path: Path) -> None:
    assert publish_key_hex(tmp_path) == publish_key_hex(tmp_path)
    assert server_keys(tmp_path) == server_keys(tmp_path)


def test_a_file_that_is_not_a_client_file_is_refused_naming_the_problem(tmp_path: Path) -> None:
    with pytest.raises(ConnectionFileError, match="no client connection file"):
        read_client_file(tmp_path / "missing.json")
    write_bus_info(tmp_path, new_bus_info(tmp_path, 1))
    with pytest.raises(ConnectionFileError, match="not a client connection file: no valid server_key"):
        read_client_file(tmp_path / "run" / "bus.json")
    out = tmp_path / "c.json"
    issue_client(tmp_path, "c", "127.0.0.1:5700", out)
    raw = json.loads(out.read_text())
    (tmp_path / "ipc.json").write_text(json.dumps({**raw, "control": "ipc:///tmp/x"}))
    with pytest.raises(ConnectionFileError, match="tcp:// endpoints only"):
        read_client_file(tmp_path / "ipc.json")
    (tmp_path / "extra.json").write_text(json.dumps({**raw, "surprise": 1}))
    with pytest.raises(ConnectionFileError, match="not a connection file of this version"):
        read_client_file(tmp_path / "extra.json")


def test_the_bus_variable_replaces_the_homes_connection_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    local = new_bus_info(tmp_path, 1)
    write_bus_info(tmp_path, local)
    out = tmp_path / "c.json"
    issue_client(tmp_path, "c", "127.0.0.1:5700", out)
    monkeypatch.setenv(BUS_ENV, "")  # recorded, so that what use_bus_file sets is undone afterwards
    monkeypatch.delenv(BUS_ENV)
    assert read_bus_info(tmp_path) == local
    use_bus_file(out)
    assert read_bus_info(tmp_path).client == "c"
    monkeypatch.setenv(BUS_ENV, str(tmp_path / "gone.json"))
    with pytest.raises(ConnectionFileError, match=r"gone\.json"):
        read_bus_info(tmp_path)


def test_the_supervisor_command_line_manages_clients_and_refuses_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from heidi_engine.supervisor.cli import main

    monkeypatch.chdir(tmp_path)
    umask = os.umask(0o022)  # main() sets the daemon's umask: give this process its own back afterwards
    try:
        _manage_clients_on_the_command_line(main, tmp_path, capsys)
    finally:
        os.umask(umask)


def _manage_clients_on_the_command_line(
    main: Callable[[list[str]], int], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = ["--home", str(tmp_path)]
    assert main([*home, "--issue-client", "laptop"]) == 2
    assert "give --listen HOST:PORT" in capsys.readouterr().err
    assert main([*home, "--issue-client", "laptop", "--listen", "nowhere"]) == 2
    assert "expected HOST:PORT" in capsys.readouterr().err
    assert main([*home, "--issue-client", "laptop", "--listen", "127.0.0.1:5700"]) == 0
    assert "wrote laptop.bus.json" in capsys.readouterr().out
    assert read_client_file(tmp_path / "laptop.bus.json").client == "laptop"
    assert main([*home, "--list-clients"]) == 0 and capsys.readouterr().out.split() == ["laptop", "operator"]
    assert main([*home, "--issue-client", "root", "--role", "admin", "--output", "r.json",
                 "--listen", "127.0.0.1:5700"]) == 0
    said = capsys.readouterr()
    assert "role admin" in said.out and "warning: r.json is an admin's" in said.err, said
    assert main([*home, "--role", "viewer"]) == 2
    assert "--role goes with --issue-client" in capsys.readouterr().err
    assert main([*home, "--revoke-client", "root"]) == 0
    assert main([*home, "--revoke-client", "nobody"]) == 2
    assert "no client named 'nobody' (authorized clients: laptop)" in capsys.readouterr().err
    assert main([*home, "--output", "x.json"]) == 2
    assert "--output goes with --issue-client" in capsys.readouterr().err
    assert main([*home, "--listen", "127.0.0.1:99999"]) == 2
    assert "1..65533" in capsys.readouterr().err
    assert main([*home, "--revoke-client", "laptop"]) == 0 and list_clients(tmp_path) == []


@pytest.mark.parametrize("name", ["bus.hmac", "server.key_secret"])
def test_a_secret_key_file_others_can_read_is_refused_naming_it(tmp_path: Path, name: str) -> None:
    publish_key_hex(tmp_path)
    server_keys(tmp_path)
    path = tmp_path / "keys" / name
    path.chmod(0o644)
    with pytest.raises(RemoteError, match=rf"{path} is mode 0644.*chmod 600 {path}"):
        publish_key_hex(tmp_path) if name == "bus.hmac" else server_keys(tmp_path)
    path.chmod(0o600)
    assert publish_key_hex(tmp_path) and server_keys(tmp_path)


def test_the_supervisor_refuses_to_start_with_a_world_readable_key(tmp_path: Path) -> None:
    home = tmp_path / "h"
    home.mkdir()
    publish_key_hex(home)
    (home / "keys" / "bus.hmac").chmod(0o644)
    done = subprocess.run(
        [sys.executable, "-m", "heidi_engine.supervisor.cli", "--home", str(home), "--no-gpu", "--listen", "127.0.0.1:45123"],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 1 and f"{home / 'keys' / 'bus.hmac'} is mode 0644" in done.stderr, done.stderr
