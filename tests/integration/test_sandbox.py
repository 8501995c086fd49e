"""The unit-test sandbox against real hostile solutions: each is contained, killed and counted as a fail.

Every test checks afterwards (autouse fixture) that no process of a sandbox run survives and that no
sandbox directory is left behind.
"""

from __future__ import annotations

import errno
import glob
import json
import os
import re
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from harness import agent_env, interpreter_for, scripted, wait_until

from heidi_engine.agents.sandbox import runner as sandbox
from heidi_engine.agents.sandbox.bwrap import TMPFS
from heidi_engine.agents.sandbox.reaper import SHARED_DIRS
from heidi_engine.agents.sandbox.runner import (
    SandboxLimits,
    SandboxResult,
    network_isolation_available,
    network_isolation_message,
    run_many,
    run_solution,
)
from heidi_engine.agents.sandbox.seccomp import ARCHES, this_machine
from heidi_engine.bus.errors import CommandRefused
from heidi_engine.bus.isolation import NONE_WARNING
from heidi_engine.ui.status_view import format_status

pytestmark = pytest.mark.timeout(120)

QUICK = SandboxLimits(timeout_s=10.0, cpu_s=5)
FAKE_KEY = "sk-proj-FAKEsandboxTESTkey0123456789abcdef"
SANDBOX_UIDS = range(2_100_000_000, 2_100_000_000 + 4096)


def _sandbox_leftovers() -> dict[int, str]:
    """Live processes that belong to a sandbox run (its uid, or its HOME under a sandbox directory)."""
    prefix = os.path.join(tempfile.gettempdir(), "heidi-sandbox-")
    found = {}
    for proc in psutil.process_iter(["pid", "uids", "status"]):
        if proc.info["status"] == psutil.STATUS_ZOMBIE or proc.info["uids"] is None:
            continue
        if proc.info["uids"].real in SANDBOX_UIDS:
            found[proc.pid] = f"runs as sandbox uid {proc.info['uids'].real}"
            continue
        try:
            home = proc.environ().get("HOME", "")
        except (psutil.Error, OSError):
            continue
        if home.startswith(prefix):
            found[proc.pid] = f"has HOME={home}"
    return found


@pytest.fixture(autouse=True)
def nothing_left_behind() -> Iterator[None]:
    pattern = os.path.join(tempfile.gettempdir(), "heidi-sandbox-*")
    before = set(glob.glob(pattern))
    yield
    leftovers = _sandbox_leftovers()
    for pid in leftovers:  # so that one failure does not spill into the next tests
        try:
            psutil.Process(pid).kill()
        except psutil.NoSuchProcess:
            pass
    assert leftovers == {}
    assert set(glob.glob(pattern)) - before == set()


def _run(
    code: str, tests: str = "assert True", limits: SandboxLimits = QUICK, **kwargs: str
) -> SandboxResult:
    return run_solution(textwrap.dedent(code), textwrap.dedent(tests), limits, **kwargs)


def _host_view() -> str:
    """The SANDBOX mode for tests that watch a run's processes and files from the host: the namespace
    sandbox (bwrap's are behind its own /proc and tmpfs, which the escape corpus checks instead)."""
    if os.geteuid() != 0:
        pytest.skip("the namespace sandbox needs root")
    return "namespaces"


def _backend(name: str) -> str:
    """The SANDBOX mode that asks for backend ``name``, or a skip where it cannot run here."""
    if name == "bwrap" and shutil.which("bwrap") is None:
        pytest.skip("bwrap is not installed")
    if name == "namespaces" and os.geteuid() != 0:
        pytest.skip("the namespace sandbox needs root")
    return name


def _printed(result: SandboxResult, label: str) -> str:
    match = re.search(rf"^{label}=(.*)$", result.output, re.M)
    assert match is not None, f"{label}= not in output:\n{result.output}"
    return match.group(1)


def test_a_correct_solution_passes() -> None:
    result = _run("def add(a, b):\n    return a + b\n", "assert add(1, 2) == 3\nassert add(-1, 1) == 0\n")
    assert (result.passed, result.outcome, result.returncode) == (True, "pass", 0)
    assert result.network_isolated is network_isolation_available()
    assert result.output == ""


def test_a_failing_assertion_fails() -> None:
    result = _run("def add(a, b):\n    return a - b\n", "assert add(1, 2) == 3\n")
    assert (result.passed, result.outcome) == (False, "fail")
    assert "AssertionError" in result.output and 'File "tests.py", line 1' in result.output
    assert "harness.py" not in result.output  # tracebacks show the solution's frames only


def test_a_syntax_error_is_an_error() -> None:
    result = _run("def add(a, b) return a + b\n", "assert add(1, 2) == 3\n")
    assert (result.passed, result.outcome) == (False, "error")
    assert "SyntaxError" in result.output and "solution.py" in result.output


def test_an_infinite_loop_is_killed() -> None:
    limits = SandboxLimits(timeout_s=2.0, cpu_s=1)
    result = _run("while True:\n    pass\n", limits=limits)
    assert (result.passed, result.outcome) == (False, "timeout")
    assert "[sandbox]" in result.output
    assert result.duration_s < limits.timeout_s + 5  # killed, not left to run


def test_a_sleeping_solution_is_stopped_by_the_wall_clock() -> None:
    result = _run("import time\ntime.sleep(600)\n", limits=SandboxLimits(timeout_s=1.0, cpu_s=5))
    assert (result.passed, result.outcome) == (False, "timeout")
    assert "wall-clock timeout" in result.output


# 40 children sleep forever; 10 more double-fork and setsid() away from the process group. Each reports
# its pid as this machine sees it (/proc/self, which a PID namespace does not remap).
FORKER = """
    import os, time
    reader, writer = os.pipe()
    for i in range(50):
        if os.fork() == 0:
            if i % 5 == 0:
                os.setsid()
                if os.fork():
                    os._exit(0)
            os.write(writer, (os.readlink("/proc/self") + "\\n").encode())
            while True:
                time.sleep(60)
    os.close(writer)
    data = b""
    while data.count(b"\\n") < 50:
        chunk = os.read(reader, 4096)
        assert chunk, "a child died before reporting"
        data += chunk
    print("PIDS=" + " ".join(data.decode().split()))
    print("HOME=" + os.environ["HOME"])
"""


@pytest.mark.parametrize("isolation", ["strongest", "uid-only", "none"])
def test_forked_children_and_daemons_do_not_survive_the_run(
    isolation: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The weaker set-ups are what machines without namespaces (or without root) get: the process group
    # kill and the sweep (by uid, or by HOME) must then catch the escapees on their own.
    if isolation != "strongest":
        if isolation == "uid-only" and os.geteuid() != 0:
            pytest.skip("a uid of its own needs root")
        weaker = sandbox._Plan(namespaces=0, userns=False, drop=isolation == "uid-only")
        monkeypatch.setattr(sandbox, "_plan", lambda mode: weaker)
    result = _run(FORKER, sandbox=_host_view())
    assert result.passed, result.output
    pids = [int(pid) for pid in _printed(result, "PIDS").split()]
    home = _printed(result, "HOME")
    assert len(pids) == 50
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            alive = proc.status() != psutil.STATUS_ZOMBIE and proc.environ().get("HOME") == home
        except psutil.NoSuchProcess:
            alive = False
        assert not alive, f"child {pid} survived the run"


def test_a_fork_bomb_is_contained() -> None:
    code = """
        import os
        while True:
            try:
                os.fork()
            except OSError:
                pass
    """
    result = _run(code, limits=SandboxLimits(timeout_s=1.5, cpu_s=1, max_procs=8))
    assert not result.passed
    assert result.outcome in ("timeout", "killed")


def test_allocating_ten_gigabytes_fails_and_leaves_us_alone() -> None:
    our_limit = resource.getrlimit(resource.RLIMIT_AS)
    result = _run("data = bytearray(10 * 2**30)\n", "assert len(data) == 10 * 2**30\n")
    assert not result.passed
    assert result.outcome in ("oom", "killed")
    assert resource.getrlimit(resource.RLIMIT_AS) == our_limit
    assert _run("x = 1\n", "assert x == 1\n").passed


def test_a_huge_file_is_cut_off_and_removed() -> None:
    shared = os.path.join(tempfile.gettempdir(), f"sandbox-test-{os.getpid()}.bin")
    code = f"""
        import os
        print("CWD=" + os.getcwd())
        chunk = b"x" * 2**20
        try:
            with open({shared!r}, "wb") as shared:
                for _ in range(64):
                    shared.write(chunk)
        except OSError as exc:
            print("shared:", exc)
        with open("big.bin", "wb") as big:
            for _ in range(64):
                big.write(chunk)
    """
    result = _run(code, "assert os.path.getsize('big.bin') == 64 * 2**20\n", sandbox=_host_view())
    assert (result.passed, result.outcome) == (False, "error")
    assert "File too large" in result.output
    workdir = _printed(result, "CWD")
    assert not os.path.exists(workdir) and not os.path.exists(os.path.dirname(workdir))
    plan = sandbox._plan("namespaces")
    if plan.drop or plan.namespaces & sandbox._CLONE_NEWNS:  # its own /tmp, or its files there removed
        assert not os.path.exists(shared)
    else:
        with open(shared, "rb") as handle:
            assert len(handle.read()) <= 16 * 2**20
        os.unlink(shared)


# Which folders the code can write to, and how large each is (statvfs of a tmpfs is its size).
PLACES = """
    import os, resource
    for folder in ("/", "/etc", "/usr", "/var", "/dev", "/run", "/tmp", "/var/tmp", "/dev/shm", "/run/lock", os.getcwd()):
        try:
            os.close(os.open(os.path.join(folder, "probe"), os.O_WRONLY | os.O_CREAT, 0o600))
            info = os.statvfs(folder)
            print(f"WRITABLE={folder} {info.f_blocks * info.f_frsize}")
        except OSError as exc:
            print(f"CLOSED={folder} {exc.strerror}")
    print(f"AS={resource.getrlimit(resource.RLIMIT_AS)[0]}")
    print(f"CWD={os.getcwd()}")
"""


@pytest.mark.parametrize("backend", ["bwrap", "namespaces"])
def test_writable_places_are_sized_tmpfs_within_the_memory_budget(backend: str) -> None:
    result = _run(PLACES, sandbox=_backend(backend))
    assert result.passed, result.output
    found = re.findall(r"^WRITABLE=(\S+) (\d+)$", result.output, re.M)
    writable = {folder: int(size) for folder, size in found}
    if backend == "bwrap":
        count, expected = len(TMPFS), set(TMPFS)
    else:  # the host's shared folders (where this host has them) and its working folder
        count = len(SHARED_DIRS) + 1
        expected = {path for path in SHARED_DIRS if os.path.isdir(path)} | {_printed(result, "CWD")}
    each, processes = QUICK.budget(count)
    assert set(writable) == expected, result.output
    assert set(writable.values()) == {each}, result.output  # each one sized
    assert int(_printed(result, "AS")) == processes  # and the processes get what the files do not
    assert count * each + processes == QUICK.memory_mb << 20


def test_the_filter_refuses_the_keyring_to_a_real_process() -> None:
    if this_machine() not in ARCHES:
        pytest.skip(f"no keyring filter for {os.uname().machine}")
    script = textwrap.dedent(
        """
        import ctypes, os
        from heidi_engine.agents.sandbox.harness import install_filter
        from heidi_engine.agents.sandbox.seccomp import ARCHES, keyring_filter, this_machine
        libc = ctypes.CDLL(None, use_errno=True)
        libc.syscall.restype = ctypes.c_long
        zero = ctypes.c_ulong(0)
        assert libc.prctl(38, ctypes.c_ulong(1), zero, zero, zero) == 0  # PR_SET_NO_NEW_PRIVS
        install_filter(keyring_filter())
        for nr in ARCHES[this_machine()].keyring:
            ring = ctypes.c_long(-4)
            got = libc.syscall(ctypes.c_long(nr), b"user", b"filter-test", b"v", ctypes.c_size_t(1), ring)
            print(f"CALL {nr} {got} {ctypes.get_errno()}", flush=True)
        print(f"PID {os.getpid()} {os.getppid()}", flush=True)
        if this_machine() == "x86_64":
            libc.syscall(ctypes.c_long(0x40000000 + 39))  # getpid through the x32 ABI
        print("SURVIVED", flush=True)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    calls = re.findall(r"^CALL (\d+) (-?\d+) (\d+)$", done.stdout, re.M)
    refused = [(nr, -1, errno.EPERM) for nr in ARCHES[this_machine()].keyring]
    assert [(int(nr), int(got), int(err)) for nr, got, err in calls] == refused, done.stdout + done.stderr
    pid, ppid = map(int, re.findall(r"^PID (\d+) (\d+)$", done.stdout, re.M)[0])
    assert pid > 1 and ppid == os.getpid()  # getpid and the rest still work
    if this_machine() == "x86_64":
        assert done.returncode == -signal.SIGSYS and "SURVIVED" not in done.stdout, done
    else:
        assert done.returncode == 0 and "SURVIVED" in done.stdout, done


@pytest.mark.parametrize("backend", ["bwrap", "namespaces"])
def test_a_filter_the_kernel_refuses_stops_the_run(backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    mode = _backend(backend)
    sandbox._plan(mode)  # probed with the real filter (the probe is cached)
    monkeypatch.setattr(sandbox, "_seccomp_hex", lambda: "ffff000000000000")  # no such BPF instruction
    result = _run("print('THE CODE RAN')\n", sandbox=mode)
    assert (result.passed, result.outcome) == (False, "error"), result.output
    assert "seccomp filter refused by the kernel" in result.output and "could not be set up" in result.output
    assert "THE CODE RAN" not in result.output


def test_the_environment_holds_no_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", FAKE_KEY)
    code = "import os\nprint(sorted(os.environ.items()))\nKEY = os.environ.get('OPENAI_API_KEY')\n"
    result = _run(code, "assert KEY, 'no key'\n")
    assert (result.passed, result.outcome) == (False, "fail")
    assert "PATH" in result.output and FAKE_KEY not in result.output and "OPENAI_API_KEY" not in result.output
    clean = _run(
        "import os\n",
        # bwrap's --chdir also sets PWD, which holds nothing but the working folder.
        "assert set(os.environ) - {'PWD'} == {'PATH', 'LANG', 'HOME', 'TMPDIR', 'PYTHONDONTWRITEBYTECODE'}, os.environ\n"
        "assert os.environ['PATH'] == '/usr/bin:/bin' and os.environ['HOME'] == os.getcwd()\n",
    )
    assert clean.passed, clean.output


def test_another_process_environment_is_unreadable() -> None:
    if not sandbox._plan("auto").drop:
        pytest.skip("runs keep the supervisor's uid here, so same-uid /proc/<pid>/environ stays readable")
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"],
        stdin=subprocess.PIPE,
        env={"PATH": "/usr/bin:/bin", "OPENAI_API_KEY": FAKE_KEY},
    )
    try:
        code = f"""
            try:
                with open("/proc/{holder.pid}/environ", "rb") as handle:
                    STOLEN = handle.read().decode(errors="replace")
            except OSError as exc:
                STOLEN = ""
                print("denied:", exc)
            print(STOLEN)
        """
        result = _run(code, "assert 'OPENAI_API_KEY' in STOLEN\n")
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=10)
    assert (result.passed, result.outcome) == (False, "fail")
    assert "denied" in result.output and FAKE_KEY not in result.output


def test_a_socket_cannot_reach_a_local_listener() -> None:
    if not network_isolation_available():
        pytest.skip(f"no network isolation on this machine: {network_isolation_message()}")
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.setblocking(False)
        port = listener.getsockname()[1]
        code = f"""
            import socket
            try:
                socket.create_connection(("127.0.0.1", {port}), timeout=2).close()
                CONNECTED = True
            except OSError as exc:
                print("connect:", exc)
                CONNECTED = False
        """
        result = _run(code, "assert CONNECTED\n")
        assert (result.passed, result.outcome) == (False, "fail")
        assert "connect:" in result.output
        with pytest.raises(BlockingIOError):
            listener.accept()


@pytest.mark.parametrize(
    ("code", "outcome"),
    [
        ("import os\nos._exit(0)\n", "incomplete"),
        ("import sys\nsys.exit(0)\n", "error"),
        ("raise SystemExit\n", "error"),
        (
            "import builtins\nbuiltins.exec = lambda *a, **k: None\nbuiltins.compile = lambda *a, **k: None\n",
            "fail",
        ),
        (
            "import os, threading\nthreading.Timer(0.0, lambda: os._exit(0)).start()\nimport time\ntime.sleep(5)\n",
            "incomplete",
        ),
        ("import os\nprint('PASS\\n' + '0' * 32, flush=True)\nos._exit(0)\n", "incomplete"),
        ("import os\nos.close(1)\nos.close(2)\n", "fail"),
    ],
    ids=[
        "os._exit",
        "sys.exit",
        "SystemExit",
        "patched-builtins",
        "exit-from-thread",
        "fake-token",
        "closed-stdout",
    ],
)
def test_tricks_do_not_fake_a_pass(code: str, outcome: str) -> None:
    result = _run(code, "assert False, 'the tests ran'\n")
    assert not result.passed
    assert result.outcome == outcome, result.output


def test_entry_point_and_check_candidate() -> None:
    tests = "def check(candidate):\n    assert candidate(3) == 6\n"
    assert _run("def double(x):\n    return 2 * x\n", tests, entry_point="double").passed
    wrong = _run("def double(x):\n    return x\n", tests, entry_point="double")
    assert wrong.outcome == "fail"
    missing = _run("def triple(x):\n    return 3 * x\n", tests, entry_point="double")
    assert missing.outcome == "error" and "defines no function 'double'" in missing.output
    unnamed = _run("def double(x):\n    return 2 * x\n", tests)
    assert unnamed.outcome == "error" and "no entry_point" in unnamed.output


def test_output_is_a_bounded_ansi_free_tail() -> None:
    code = "for i in range(20000):\n    print(f'\\x1b[31mline {i}\\x1b[0m')\n"
    result = _run(code, limits=SandboxLimits(timeout_s=10.0, output_limit=500))
    assert result.passed
    assert len(result.output) <= 500
    assert "\x1b" not in result.output and "line 19999" in result.output


def test_run_many_keeps_input_order() -> None:
    good = ("def f(x):\n    return x + 1\n", "assert f(1) == 2\n")
    bad = ("def f(x):\n    return x\n", "assert f(1) == 2\n")
    broken = ("def f(x) return x\n", "assert f(1) == 2\n")
    items = [good, bad, broken, good, bad, good]
    results = run_many(items, QUICK, workers=3)
    assert [r.outcome for r in results] == ["pass", "fail", "error", "pass", "fail", "pass"]
    assert run_many([], QUICK) == []


def test_bad_arguments_are_named() -> None:
    with pytest.raises(ValueError, match="timeout_s"):
        SandboxLimits(timeout_s=0)
    with pytest.raises(TypeError, match="cpu_s"):
        SandboxLimits(cpu_s=True)
    with pytest.raises(ValueError, match="memory_mb"):
        SandboxLimits(memory_mb=1)
    with pytest.raises(TypeError, match="code"):
        run_solution(b"x = 1", "assert x")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="entry_point"):
        run_solution("x = 1", "assert x", entry_point="not an identifier")
    with pytest.raises(ValueError, match="workers"):
        run_many([("x = 1", "assert x")], workers=0)
    with pytest.raises(TypeError, match="item 0"):
        run_many([("x = 1",)])  # type: ignore[list-item]


def test_isolation_is_reported_consistently() -> None:
    message = network_isolation_message()
    assert (message is None) is network_isolation_available()
    if _has_cap_sys_admin():  # then unshare(CLONE_NEWNET) works, and nothing excuses its absence
        assert network_isolation_available(), message


def _has_cap_sys_admin() -> bool:
    with open("/proc/self/status") as handle:
        effective = next(line for line in handle if line.startswith("CapEff:")).split()[1]
    return bool(int(effective, 16) >> 21 & 1)


def test_contained_without_root() -> None:
    """The same containment for a supervisor that is not root (user namespaces where the kernel allows)."""
    nobody = 65534
    if os.geteuid() != 0:
        pytest.skip("needs root to start a supervisor as another user")
    python = interpreter_for(nobody)
    if python is None:
        pytest.skip(f"no python{sys.version_info.major}.{sys.version_info.minor} that uid {nobody} can run")
    project = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    shim = tempfile.mkdtemp(prefix="sandbox-shim-")
    marker = str(100_000 + secrets.randbelow(800_000))
    try:
        os.chmod(shim, 0o755)
        os.makedirs(os.path.join(shim, "heidi_engine"), mode=0o755)
        for package in ("bus", "agents"):
            os.symlink(os.path.join(project, package), os.path.join(shim, "heidi_engine", package))
        script = textwrap.dedent(
            """
            import json, time
            from heidi_engine.agents.sandbox import runner as sandbox
            MARKER = "@MARKER@"
            limits = sandbox.SandboxLimits(timeout_s=2.0, cpu_s=1)
            # The daemon becomes "sleep <marker>", which the host can find whatever pid it shows inside.
            daemon = (
                "import os\\n"
                "reader, writer = os.pipe()\\n"
                "if os.fork() == 0:\\n"
                "    os.setsid()\\n"
                "    os.write(writer, b'up')\\n"
                "    os.execv('/bin/sleep', ['sleep', '@MARKER@'])\\n"
                "print('UP=' + os.read(reader, 64).decode())\\n"
            ).replace("@MARKER@", MARKER)
            runs = {
                "pass": sandbox.run_solution("def f():\\n    return 1\\n", "assert f() == 1\\n", limits),
                "loop": sandbox.run_solution("while True:\\n    pass\\n", "assert True\\n", limits),
                "daemon": sandbox.run_solution(daemon, "assert True\\n", limits),
            }
            print(json.dumps({"network": sandbox.network_isolation_available(),
                              "runs": {k: [r.outcome, r.output] for k, r in runs.items()}}))
            """
        ).replace("@MARKER@", marker)
        done = subprocess.run(
            [python, "-I", "-c", f"import sys; sys.path.insert(0, {shim!r})\n{script}"],
            user=nobody, group=nobody, extra_groups=[], cwd="/", capture_output=True, text=True,
            timeout=60, env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}, check=False,
        )  # fmt: skip
    finally:
        shutil.rmtree(shim)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    runs = report["runs"]
    assert runs["pass"][0] == "pass"
    assert runs["loop"][0] == "timeout"
    assert runs["daemon"][0] == "pass" and "UP=up" in runs["daemon"][1], runs["daemon"]
    deadline = time.monotonic() + 5
    while survivors := _sleeping_on(marker):
        assert time.monotonic() < deadline, f"the daemonized child survived: {survivors}"
        time.sleep(0.05)


def _sleeping_on(marker: str) -> list[int]:
    found = []
    for proc in psutil.process_iter(["pid", "cmdline", "status"]):
        if proc.info["cmdline"] == ["sleep", marker] and proc.info["status"] != psutil.STATUS_ZOMBIE:
            found.append(proc.pid)
    return found


def test_a_gated_run_that_cannot_be_isolated_is_refused_at_start(start_supervisor: Any, home: Path) -> None:
    # No bwrap on the supervisor's PATH and SANDBOX bwrap: nothing may start, and the one line says why.
    empty = home / "empty-bin"
    empty.mkdir()
    sup = start_supervisor(env={"PATH": str(empty)}).wait_ready()
    with pytest.raises(CommandRefused) as err:
        sup.call("start", {"overrides": {"RUN_UNIT_TESTS": "1", "SANDBOX": "bwrap"}})
    message = str(err.value)
    assert "bwrap" in message and "install bubblewrap" in message and "\n" not in message, message
    assert not list((home / "runs").iterdir())
    assert sup.status()["status"] == "idle"
    assert sup.status().get("sandbox_warning") is None


def test_sandbox_none_is_a_warning_in_status(start_supervisor: Any, home: Path) -> None:
    sup = start_supervisor(env=agent_env(scripted("--events", "1")), config="ROUNDS: 1\n").wait_ready()
    sup.call("start", {"overrides": {"RUN_UNIT_TESTS": "1", "SANDBOX": "none"}})
    wait_until(lambda: sup.status().get("sandbox_warning") == NONE_WARNING, 20, what="the SANDBOX none warning")
    shown = format_status(sup.status())
    assert "SANDBOX none" in shown, shown
