"""Run the sandbox escape corpus through the unit-test gate's sandbox and print the verdicts as JSON.

    python -I escape_driver.py SHIM SPEC.json

SHIM (may be empty) goes first on sys.path, so that an interpreter without the project's virtualenv (an
ordinary user's) can import ``heidi_engine``. SPEC names the host paths, ports and markers the escapes
aim at. Each escape is a solution whose tests assert that it escaped: a contained escape fails its
tests (or is stopped by a limit), and says why on a ``ESCAPE failed:`` line where it can.
The escapes in ``SPEC["measured"]`` run alone, last, while the host's shared memory (tmpfs) and disk use
are sampled; the report gives how far each grew above where it started.
Standard library only: it runs under the system interpreter too.
"""

from __future__ import annotations

import json
import os
import sys
import threading

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

# Each body sets ESCAPED; the tests are "assert ESCAPED". ``{name}`` fields come from the spec.
ESCAPES: dict[str, str] = {
    "read_home_canary": """
try:
    with open({canary!r}) as handle:
        ESCAPED = {canary_text!r} in handle.read()
except OSError as exc:
    ESCAPED = False
    print("ESCAPE failed:", exc)
""",
    "append_to_checkout": """
ESCAPED = True
for path in ({checkout_file!r}, {venv_file!r}):
    try:
        with open(path, "a") as handle:
            handle.write("import os  # escaped\\n")
    except OSError as exc:
        ESCAPED = False
        print("ESCAPE failed:", path, exc)
""",
    "read_proc_environ": """
import os
ESCAPED = False
for name in os.listdir("/proc"):
    if name.isdigit():
        try:
            with open(f"/proc/{{name}}/environ", "rb") as handle:
                ESCAPED = ESCAPED or {key!r}.encode() in handle.read()
        except OSError:
            pass
print("ESCAPE failed: no environ holds the key" if not ESCAPED else "found the key")
""",
    "read_bus_json": """
try:
    with open({bus_json!r}) as handle:
        ESCAPED = "hmac" in handle.read()
except OSError as exc:
    ESCAPED = False
    print("ESCAPE failed:", exc)
""",
    "connect_bus_socket": """
import socket
try:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(2)
        sock.connect({bus_socket!r})
    ESCAPED = True
except OSError as exc:
    ESCAPED = False
    print("ESCAPE failed:", exc)
""",
    "connect_tcp_loopback": """
import socket
try:
    socket.create_connection(("127.0.0.1", {tcp_port}), timeout=2).close()
    ESCAPED = True
except OSError as exc:
    ESCAPED = False
    print("ESCAPE failed:", exc)
""",
    "outlive_the_run": """
import os
reader, writer = os.pipe()
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.write(writer, b"up")
        os.execv("/bin/sleep", ["sleep", {marker!r}])
    os._exit(0)
print("DAEMON " + os.read(reader, 8).decode())
ESCAPED = False  # known only from the host afterwards: the test looks for "sleep <marker>"
print("ESCAPE failed: outliving the run is decided on the host")
""",
    "allocate_4gb": """
import os
children = []
for _ in range(8):
    pid = os.fork()
    if pid == 0:
        try:
            block = b"x" * (512 << 20)
            os.write(1, b"allocated 512 MB\\n")
            os._exit(0)
        except MemoryError:
            os._exit(3)
    children.append(pid)
statuses = [os.waitpid(pid, 0)[1] for pid in children]
ESCAPED = all(status == 0 for status in statuses)
print("ESCAPE failed: statuses", statuses) if not ESCAPED else None
""",
    "fill_dev_shm": """
import os
ESCAPED = True
try:
    for index in range(16):
        with open(f"/dev/shm/{marker}-{{index}}", "wb") as handle:
            handle.write(b"x" * (16 << 20))
except OSError as exc:
    ESCAPED = False
    print("ESCAPE failed:", exc)
""",
    "write_10gb_file": """
import os
ESCAPED = True
try:
    with open("/tmp/{marker}.bin", "wb") as handle:
        chunk = b"x" * (64 << 20)
        for _ in range(160):
            handle.write(chunk)
except OSError as exc:
    ESCAPED = False
    print("ESCAPE failed:", exc)
""",
    "start_1000_processes": """
import os, time
started = 0
for _ in range(1000):
    try:
        if os.fork() == 0:
            time.sleep(120)
            os._exit(0)
        started += 1
    except OSError as exc:
        print("ESCAPE failed after", started, "processes:", exc)
        break
ESCAPED = started == 1000
""",
    "sleep_forever": """
import time
time.sleep(10**6)
ESCAPED = True
""",
    "fill_root_tmpfs": """
import os
written, stops = 0, []
piece = b"x" * (1 << 20)
for folder in {fill_targets!r}:
    try:
        os.makedirs(folder, exist_ok=True)
        for index in range(10**6):  # 15 MiB files (under the 16 MB file size limit) until one fails
            fd = os.open(os.path.join(folder, f"{marker}-fill-{{index}}"), os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                for _ in range(15):
                    written += os.write(fd, piece)
            finally:
                os.close(fd)
    except OSError as exc:
        stops.append(f"{{folder}}: {{exc.strerror}}")
ESCAPED = written >= {memory_mb} << 20
print(f"ESCAPE failed: wrote {{written >> 20}} MB in all;", "; ".join(stops))
""",
    "add_key": """
import ctypes, os
ADD_KEY, KEYCTL = {{"x86_64": (248, 250), "aarch64": (217, 219)}}[os.uname().machine]
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
ESCAPED = False
for ring in (-3, -4):  # KEY_SPEC_SESSION_KEYRING, KEY_SPEC_USER_KEYRING
    key = libc.syscall(
        ctypes.c_long(ADD_KEY), b"user", b"escape-{marker}", b"secret", ctypes.c_size_t(6), ctypes.c_long(ring)
    )
    ESCAPED = ESCAPED or key >= 0
    print("added key", key) if key >= 0 else print("ESCAPE failed: add_key:", os.strerror(ctypes.get_errno()))
# KEYCTL_GET_KEYRING_ID with create=1 makes the user keyring, which outlives the run too.
ring = libc.syscall(ctypes.c_long(KEYCTL), ctypes.c_long(0), ctypes.c_long(-4), ctypes.c_long(1))
ESCAPED = ESCAPED or ring >= 0
print("keyctl:", ring if ring >= 0 else os.strerror(ctypes.get_errno()))
""",
    "write_run_lock": """
import os
# The host planted {run_lock_planted!r}: seeing it means sharing the host's /run/lock.
ESCAPED = os.path.exists({run_lock_planted!r})
for folder in ("/run/lock", "/var/lock"):
    try:
        with open(os.path.join(folder, "{marker}-lock"), "w") as handle:
            handle.write("escaped")
        print("wrote a file in", folder)
    except OSError as exc:
        print(folder, exc)
print("ESCAPE failed: the host's /run/lock is not here" if not ESCAPED else "the host's /run/lock is here")
""",
}


def _host_use() -> tuple[int, int]:
    """(bytes of shared memory: every tmpfs and shm segment, bytes used on the disks of the shared
    writable folders)."""
    with open("/proc/meminfo") as handle:
        shmem = next(int(line.split()[1]) << 10 for line in handle if line.startswith("Shmem:"))
    disks: dict[int, int] = {}
    for folder in ("/", "/tmp", "/var/tmp", "/run/lock"):
        try:
            info = os.statvfs(folder)
            disks[os.stat(folder).st_dev] = (info.f_blocks - info.f_bfree) * info.f_frsize
        except OSError:
            continue
    return shmem, sum(disks.values())


def _measured(run: Any) -> tuple[Any, dict[str, int]]:
    """``run()``'s result and how far the host's shared memory and disk use grew while it ran (MB)."""
    start = _host_use()
    peak = list(start)
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.02):
            for index, value in enumerate(_host_use()):
                peak[index] = max(peak[index], value)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        result = run()
    finally:
        done.set()
        sampler.join()
    return result, {"shmem_mb": (peak[0] - start[0]) >> 20, "disk_mb": (peak[1] - start[1]) >> 20}


def main() -> None:
    """Run every escape (``SPEC["only"]`` if given) and print ``{name: [outcome, output]}``."""
    shim, spec_path = sys.argv[1], sys.argv[2]
    if shim:
        sys.path.insert(0, shim)
    from heidi_engine.agents.sandbox import runner as sandbox

    with open(spec_path) as handle:
        spec: dict[str, Any] = json.load(handle)
    limits = sandbox.SandboxLimits(timeout_s=spec["timeout_s"], cpu_s=spec["cpu_s"])
    spec["memory_mb"] = limits.memory_mb
    names = spec.get("only") or list(ESCAPES)
    mode = spec.get("sandbox", "auto")
    # Escapes that only a limit other than the clock may stop get a long clock ("patient"), so that a
    # slow, busy machine cannot make the wall clock stop them first.
    patient = [name for name in names if name in spec.get("patient", ())]
    measured = [name for name in names if name in spec.get("measured", ())]
    quick = [name for name in names if name not in patient and name not in measured]
    items = [(ESCAPES[name].format(**spec), "assert ESCAPED\n") for name in quick]
    results = dict(zip(quick, sandbox.run_many(items, limits, sandbox=mode), strict=True))
    long = sandbox.SandboxLimits(timeout_s=60.0, cpu_s=60)
    for name in patient:
        results[name] = sandbox.run_solution(
            ESCAPES[name].format(**spec), "assert ESCAPED\n", long, sandbox=mode
        )
    growth = {}
    default = sandbox.SandboxLimits()  # the gate's own clock (SANDBOX_TIMEOUT_S): a fill has that long
    for name in measured:
        code = ESCAPES[name].format(**spec)
        results[name], growth[name] = _measured(
            lambda code=code: sandbox.run_solution(code, "assert ESCAPED\n", default, sandbox=mode)
        )
    print(
        json.dumps(
            {
                "backend": sandbox.sandbox_backend(mode),
                "memory_mb": limits.memory_mb,
                "growth": growth,
                "results": {name: [r.outcome, r.output] for name, r in results.items()},
            }
        )
    )


if __name__ == "__main__":
    main()
