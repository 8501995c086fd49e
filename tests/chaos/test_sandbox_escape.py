"""The escape corpus, run through the unit-test gate's sandbox (SANDBOX auto, so bubblewrap) as root and
as an ordinary user made for the test with ``useradd``, and through the built-in namespace sandbox
(SANDBOX namespaces, which needs root): every escape must report failure (or be stopped by a limit) and
leave no trace on the host.

Each mode runs the whole corpus once (``escape_driver.py``, in a subprocess as that user) against
targets planted on the host: a canary in the user's $HOME, files owned by the user in the checkout and
in ``.venv``, a process whose environment holds a fake API key, a home of the runs with ``run/bus.json``
and a listening unix socket, a TCP listener on 127.0.0.1 and a file in ``/run/lock``. The host's
``/proc/key-users`` (the key count of every uid, which ``/proc/keys`` shows to the key's owner only) is
read before and after, and the host's shared memory and disk use are sampled while the fill escape runs.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest
from harness import interpreter_for

pytestmark = pytest.mark.timeout(180)

PROJECT = Path(__file__).resolve().parents[2]
DRIVER = Path(__file__).with_name("escape_driver.py")
FAKE_KEY = "sk-proj-ESCAPEcorpusFAKEkey0123456789abcdef"
SANDBOX_UIDS = range(2_100_000_000, 2_100_000_000 + 4096)
# What each escape's own report looks like when it is contained: its tests failed on an
# "ESCAPE failed:" line, or a limit stopped it (then the sandbox's own line says which).
CONTAINED: dict[str, tuple[str, str]] = {
    "read_home_canary": ("fail", "ESCAPE failed:"),
    "append_to_checkout": ("fail", "ESCAPE failed:"),
    "read_proc_environ": ("fail", "ESCAPE failed: no environ holds the key"),
    "read_bus_json": ("fail", "ESCAPE failed:"),
    "connect_bus_socket": ("fail", "ESCAPE failed:"),
    "connect_tcp_loopback": ("fail", "ESCAPE failed:"),
    "outlive_the_run": ("fail", "DAEMON up"),
    "allocate_4gb": ("oom", "memory limit of the run"),
    "fill_dev_shm": ("fail", "No space left on device"),
    "write_10gb_file": ("fail", "File too large"),
    "start_1000_processes": ("fail", "ESCAPE failed after"),
    "sleep_forever": ("timeout", "wall-clock timeout"),
    "fill_root_tmpfs": ("fail", "ESCAPE failed: wrote"),
    "add_key": ("fail", "ESCAPE failed: add_key: Operation not permitted"),
    "write_run_lock": ("fail", "ESCAPE failed: the host's /run/lock is not here"),
}
# Where the fill escape writes 15 MiB files until each place refuses ("." is its working folder): the
# sandbox's root and /dev (no size of their own), and every folder a host shares with all its users.
FILL_TARGETS = ["/var/fill", "/fill", "/run/fill", "/dev/fill",
                "/tmp", "/dev/shm", "/var/tmp", "/run/lock", "."]  # fmt: skip
MODES = {"root": ("root", "auto", "bwrap"), "user": ("user", "auto", "bwrap"),
         "root-namespaces": ("root", "namespaces", "namespaces")}  # fmt: skip


@dataclass
class Corpus:
    """One mode's run of the corpus and the host-side targets to check afterwards."""

    mode: str
    user: str
    uid: int
    backend: str = ""
    results: dict[str, list[str]] = field(default_factory=dict)
    report: dict[str, Any] = field(default_factory=dict)
    # /proc/key-users before and after the run.
    key_users: tuple[dict[int, int], dict[int, int]] = field(default_factory=lambda: ({}, {}))
    spec: dict[str, Any] = field(default_factory=dict)
    digests: dict[str, str] = field(default_factory=dict)
    listeners: dict[str, socket.socket] = field(default_factory=dict)
    driver_output: str = ""


def _digest(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@contextlib.contextmanager
def _account(mode: str) -> Iterator[tuple[str, int, str]]:
    """(name, uid, home) of the user the gate runs as: root itself, or a fresh account."""
    if mode == "root":
        yield "root", 0, tempfile.mkdtemp(prefix="escape-home-")
        return
    if shutil.which("useradd") is None:
        pytest.skip("useradd is not installed")
    name = f"heidi-esc-{secrets.token_hex(3)}"
    made = subprocess.run(
        ["useradd", "--create-home", "--shell", "/bin/sh", name], capture_output=True, text=True, check=False
    )
    assert made.returncode == 0, made.stderr
    try:
        entry = pwd.getpwnam(name)
        yield name, entry.pw_uid, entry.pw_dir
    finally:
        for proc in psutil.process_iter(["uids"]):  # nothing may survive; kill before userdel
            if proc.info["uids"] is not None and proc.info["uids"].real == entry.pw_uid:
                with contextlib.suppress(psutil.Error):
                    proc.kill()
        gone = subprocess.run(["userdel", "--remove", name], capture_output=True, text=True, check=False)
        assert gone.returncode == 0, gone.stderr


def _key_users() -> dict[int, int]:
    """uid → number of keys it owns, for every uid with a key (``/proc/key-users``)."""
    found = {}
    with open("/proc/key-users") as handle:
        for line in handle:
            uid, _, rest = line.partition(":")
            found[int(uid)] = int(rest.split()[1].split("/")[0])
    return found


def _planted_file(path: str, uid: int, text: str) -> str:
    with open(path, "w") as handle:
        handle.write(text)
    os.chown(path, uid, uid)
    os.chmod(path, 0o644)
    return path


def _run_corpus(mode: str) -> Iterator[Corpus]:
    account, sandbox, _ = MODES[mode]
    if os.geteuid() != 0:
        pytest.skip("the corpus plants targets for another user and needs root")
    if sandbox == "auto" and shutil.which("bwrap") is None:
        pytest.skip(
            "bwrap is not installed (apt-get install bubblewrap): SANDBOX auto would refuse as a user"
        )
    with _account(account) as (user, uid, home), contextlib.ExitStack() as stack:
        corpus = Corpus(mode, user, uid)
        token = secrets.token_hex(4)
        work = tempfile.mkdtemp(prefix="escape-")
        stack.callback(shutil.rmtree, work, True)
        os.chmod(work, 0o755)
        # The home of the runs, as the supervisor makes it: run/ 0700 with bus.json 0600 and a socket.
        runs_home = os.path.join(home, f"autotrain-{token}")
        os.makedirs(os.path.join(runs_home, "run"), mode=0o700)
        stack.callback(shutil.rmtree, runs_home, True)
        bus_json = _planted_file(os.path.join(runs_home, "run", "bus.json"), uid, '{"hmac": "00ff"}')
        os.chmod(bus_json, 0o600)
        bus_socket = os.path.join(runs_home, "run", "ingress")
        unix = stack.enter_context(socket.socket(socket.AF_UNIX))
        unix.bind(bus_socket)
        unix.listen()
        unix.setblocking(False)
        tcp = stack.enter_context(socket.socket())
        tcp.bind(("127.0.0.1", 0))
        tcp.listen()
        tcp.setblocking(False)
        corpus.listeners = {"unix": unix, "tcp": tcp}
        for path in (runs_home, os.path.join(runs_home, "run"), bus_socket):
            os.chown(path, uid, uid)
        canary_text = f"canary-{secrets.token_hex(8)}"
        files = {
            "canary": _planted_file(os.path.join(home, f".escape-canary-{token}"), uid, canary_text),
            "checkout_file": _planted_file(str(PROJECT / f".escape-canary-{token}.py"), uid, "x = 1\n"),
            "venv_file": _planted_file(str(PROJECT / ".venv" / f"escape-canary-{token}.py"), uid, "x = 1\n"),
        }
        marker = f"9{secrets.randbelow(10**8)}"
        if os.path.isdir("/run/lock"):  # a file of the host's that only a shared /run/lock shows
            files["run_lock_planted"] = _planted_file(f"/run/lock/host-{marker}", 0, "host\n")
        for path in files.values():
            stack.callback(os.unlink, path)
        corpus.digests = {path: _digest(path) for path in files.values()}
        corpus.spec = {
            "run_lock_planted": "/run/lock/host-none", **files, "canary_text": canary_text, "key": FAKE_KEY,
            "bus_json": bus_json, "bus_socket": bus_socket, "tcp_port": tcp.getsockname()[1], "marker": marker,
            "timeout_s": 3.0, "cpu_s": 3, "patient": ["allocate_4gb"], "measured": ["fill_root_tmpfs"],
            "fill_targets": FILL_TARGETS, "sandbox": sandbox,
        }  # fmt: skip
        spec_path = os.path.join(work, "spec.json")
        Path(spec_path).write_text(json.dumps(corpus.spec))
        os.chmod(spec_path, 0o644)
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": home, "OPENAI_API_KEY": FAKE_KEY}
        # A process of the same user whose environment holds the key, as an agent's does.
        holder = subprocess.Popen(
            ["/bin/sh", "-c", "read -r _"],
            stdin=subprocess.PIPE,
            env=env,
            user=uid,
            group=uid,
            extra_groups=[],
        )
        before = _key_users()
        try:
            corpus.report, corpus.driver_output = _drive(account, uid, work, spec_path, env)
        finally:
            assert holder.stdin is not None
            holder.stdin.close()
            holder.wait(timeout=10)
        corpus.key_users = (before, _key_users())
        corpus.backend, corpus.results = corpus.report["backend"], corpus.report["results"]
        yield corpus  # the checks need the targets still planted and the user still there


def _drive(
    account: str, uid: int, work: str, spec_path: str, env: dict[str, str]
) -> tuple[dict[str, Any], str]:
    if account == "root":
        python, shim = sys.executable, ""
    else:
        found = interpreter_for(uid)
        if found is None:
            pytest.skip(f"no python{sys.version_info.major}.{sys.version_info.minor} that a new user can run")
        python = found
        # The project's two packages the sandbox needs, reachable without the (root-only) virtualenv.
        shim = os.path.join(work, "shim")
        os.makedirs(os.path.join(shim, "heidi_engine"), mode=0o755)
        for package in ("bus", "agents"):
            os.symlink(PROJECT / package, os.path.join(shim, "heidi_engine", package))
    done = subprocess.run(
        [python, "-I", str(DRIVER), shim, spec_path], user=uid, group=uid, extra_groups=[], cwd=work,
        env=env, capture_output=True, text=True, timeout=150, check=False,
    )  # fmt: skip
    evidence = f"driver exit {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    assert done.returncode == 0, evidence
    return json.loads(done.stdout.strip().splitlines()[-1]), evidence


@pytest.fixture(scope="module", params=list(MODES))
def corpus(request: pytest.FixtureRequest) -> Iterator[Corpus]:
    yield from _run_corpus(request.param)


@pytest.mark.parametrize("escape", sorted(CONTAINED))
def test_every_escape_fails_and_leaves_no_trace(corpus: Corpus, escape: str) -> None:
    outcome, said = CONTAINED[escape]
    got, output = corpus.results[escape]
    print(f"[{corpus.mode} via {corpus.backend}] {escape}: {got}\n{output}")
    assert corpus.backend == MODES[corpus.mode][2], corpus.driver_output
    # The escape's own report: its tests failed (or a limit stopped it), and why.
    assert got == outcome, output
    assert said in output, output
    # The host: nothing read, written, connected to, or left running.
    assert corpus.spec["canary_text"] not in output and FAKE_KEY not in output
    for path, digest in corpus.digests.items():
        assert _digest(path) == digest, f"{path} changed"
    for listener in corpus.listeners.values():
        with pytest.raises(BlockingIOError):
            listener.accept()  # nothing ever connected
    marker = corpus.spec["marker"]
    leftovers = [
        proc.pid
        for proc in psutil.process_iter(["cmdline", "uids", "status"])
        if proc.info["status"] != psutil.STATUS_ZOMBIE
        and (
            proc.info["cmdline"] == ["sleep", marker]
            or (proc.info["uids"] is not None and proc.info["uids"].real in SANDBOX_UIDS)
            or (corpus.uid and proc.info["uids"] is not None and proc.info["uids"].real == corpus.uid)
        )
    ]
    assert leftovers == [], f"processes of the run survived: {leftovers}"
    left = [path for folder in FILL_TARGETS if folder != "." for path in glob.glob(f"{folder}/{marker}*")]
    assert left == [], f"files of the run are on the host: {left}"
    # No key of the run's uids outlived it: the sandbox's own, and the user's (a new account has none).
    before, after = corpus.key_users
    grown = {
        uid: (before.get(uid, 0), count)
        for uid, count in after.items()
        if (uid in SANDBOX_UIDS or (corpus.uid and uid == corpus.uid)) and count > before.get(uid, 0)
    }
    assert grown == {}, f"keys added by the run outlived it (uid: (before, after)): {grown}"
    memory_mb = corpus.report["memory_mb"]
    growth = corpus.report["growth"]["fill_root_tmpfs"]
    print(f"host growth while the fill ran: {growth} (run memory {memory_mb} MB)")
    assert growth["shmem_mb"] <= memory_mb and growth["disk_mb"] <= memory_mb, growth


def test_the_fill_stays_within_the_runs_tmpfs(corpus: Corpus) -> None:
    """What the fill escape managed to write is its tmpfs budget: a quarter of the run's memory at most."""
    _, output = corpus.results["fill_root_tmpfs"]
    written = int(output.split("ESCAPE failed: wrote ", 1)[1].split()[0])
    print(f"[{corpus.mode} via {corpus.backend}] the fill wrote {written} MB: {output}")
    assert 0 < written <= corpus.report["memory_mb"] // 4, output
