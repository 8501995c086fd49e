"""Run the sandbox escape corpus through the unit-test gate's sandbox and print the verdicts as JSON.

    python -I escape_driver.py SHIM SPEC.json

SHIM (may be empty) goes first on sys.path, so that an interpreter without the project's virtualenv (an
ordinary user's) can import ``heidi_engine``. SPEC names the host paths, ports and markers the escapes
aim at. Each escape is a solution whose tests assert that it escaped: a contained escape fails its
tests (or is stopped by a limit), and says why on a ``ESCAPE failed:`` line where it can.
Standard library only: it runs under the system interpreter too.
"""

from __future__ import annotations

import json
import sys

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
}


def main() -> None:
    """Run every escape (``SPEC["only"]`` if given) and print ``{name: [outcome, output]}``."""
    shim, spec_path = sys.argv[1], sys.argv[2]
    if shim:
        sys.path.insert(0, shim)
    from heidi_engine.agents.sandbox import runner as sandbox

    with open(spec_path) as handle:
        spec: dict[str, Any] = json.load(handle)
    limits = sandbox.SandboxLimits(timeout_s=spec["timeout_s"], cpu_s=spec["cpu_s"])
    names = spec.get("only") or list(ESCAPES)
    mode = spec.get("sandbox", "auto")
    # Escapes that only a limit other than the clock may stop get a long clock ("patient"), so that a
    # slow, busy machine cannot make the wall clock stop them first.
    patient = [name for name in names if name in spec.get("patient", ())]
    quick = [name for name in names if name not in patient]
    items = [(ESCAPES[name].format(**spec), "assert ESCAPED\n") for name in quick]
    results = dict(zip(quick, sandbox.run_many(items, limits, sandbox=mode), strict=True))
    long = sandbox.SandboxLimits(timeout_s=60.0, cpu_s=60)
    for name in patient:
        results[name] = sandbox.run_solution(
            ESCAPES[name].format(**spec), "assert ESCAPED\n", long, sandbox=mode
        )
    print(
        json.dumps(
            {
                "backend": sandbox.sandbox_backend(mode),
                "results": {name: [r.outcome, r.output] for name, r in results.items()},
            }
        )
    )


if __name__ == "__main__":
    main()
