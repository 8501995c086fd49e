"""The bubblewrap command line that runs the sandbox harness (the ``bwrap`` backend).

What the sandboxed code sees: a root of its own with ``/usr`` (and the ``/bin``, ``/lib*`` links or
folders), the interpreter's installation read-only, its own ``/proc`` and a minimal ``/dev``, and three
size-limited tmpfs: ``/tmp``, ``/dev/shm`` and the working folder ``/work`` that holds the solution and
its tests. Those three are the only places it can write: bubblewrap builds the root and ``/dev`` on
tmpfs of no size, owned by the user it maps in, so both are remounted read-only once built. Nothing else
of the host: no ``$HOME``, no checkout, no virtualenv, no home of the runs, no bus sockets, no other
process. New PID, network, IPC, UTS and cgroup namespaces, a new session, an empty environment but five
variables, no capabilities, and ``--die-with-parent``.

As an ordinary user it adds a new user namespace mapping that user's own uid (and forbids nested ones).
As root it runs without one, keeping only CAP_SETUID, CAP_SETGID and CAP_KILL for the harness's trusted half, which
drops the code it runs to a uid of its own (a user namespace would map that code to root).

The sources travel as file descriptors (memfds), so no host folder is shared with the run.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

__all__ = ["TMPFS", "WORKDIR", "BwrapCommand", "bwrap_command"]

WORKDIR = "/work"
# The writable folders of a run, each a tmpfs of the size the caller gives (its share of the memory).
TMPFS = ("/tmp", "/dev/shm", WORKDIR)
_HARNESS_PATH = "/run/sandbox/harness.py"
_ENV = {
    "PATH": "/usr/bin:/bin",
    "LANG": "C.UTF-8",
    "HOME": WORKDIR,
    "TMPDIR": "/tmp",
    "PYTHONDONTWRITEBYTECODE": "1",
}
_SYSTEM = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")


@dataclass(frozen=True)
class BwrapCommand:
    """The argv and the descriptors it names (to pass to the child, then close here)."""

    argv: list[str]
    fds: tuple[int, ...]


def bwrap_command(
    bwrap: str, harness: str, files: dict[str, str], tmpfs_bytes: int, arguments: list[str], *, root: bool
) -> BwrapCommand:
    """The command that runs ``python -I -S -B -u harness arguments...`` in a bubblewrap sandbox, with
    ``files`` (name → text) in its working folder and each of :data:`TMPFS` ``tmpfs_bytes`` large
    (``--size`` needs bubblewrap 0.5 or later; an older one refuses the command, so nothing runs)."""
    if tmpfs_bytes <= 0:
        raise ValueError(f"bwrap_command: tmpfs_bytes must be positive, got {tmpfs_bytes}")
    python = os.path.realpath(sys.executable) if sys.executable else ""
    if not python:
        raise RuntimeError("the sandbox needs sys.executable to start an interpreter, and it is empty")
    fds: list[int] = []
    try:
        argv = [
            bwrap, "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
            "--die-with-parent", "--new-session", "--clearenv", "--hostname", "sandbox", "--cap-drop", "ALL",
        ]  # fmt: skip
        if root:
            argv += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID", "--cap-add", "CAP_KILL"]
        else:
            argv += ["--unshare-user", "--disable-userns"]
        for key, value in _ENV.items():
            argv += ["--setenv", key, value]
        argv += ["--ro-bind", "/usr", "/usr"]
        for path in _SYSTEM:
            if os.path.islink(path):
                argv += ["--symlink", os.readlink(path), path]
            elif os.path.isdir(path):
                argv += ["--ro-bind", path, path]
        for path in _install_dirs(python):
            argv += ["--ro-bind", path, path]
        argv += ["--proc", "/proc", "--dev", "/dev"]
        for path in TMPFS:
            argv += ["--perms", "1777", "--size", str(tmpfs_bytes), "--tmpfs", path]
        argv += ["--remount-ro", "/dev"]  # not recursive: /dev/shm stays writable
        with open(harness, encoding="utf-8") as handle:
            fds.append(_memfd("harness", handle.read()))
        argv += ["--ro-bind-data", str(fds[-1]), _HARNESS_PATH]
        for name, text in files.items():
            fds.append(_memfd(name, text))
            argv += ["--perms", "0644", "--file", str(fds[-1]), f"{WORKDIR}/{name}"]
        argv += ["--remount-ro", "/"]  # last: the binds and files above made their mount points in it
        argv += ["--chdir", WORKDIR, "--", python, "-I", "-S", "-B", "-u", _HARNESS_PATH, *arguments]
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    return BwrapCommand(argv, tuple(fds))


def _install_dirs(python: str) -> list[str]:
    """The folders outside /usr that the interpreter needs: its installation (binary, library, shared
    libraries next to it)."""
    dirs: list[str] = []
    for path in (sys.base_prefix, sys.base_exec_prefix, os.path.dirname(os.path.dirname(python))):
        path = os.path.realpath(path)
        if path in ("/", "/usr") or path.startswith("/usr/") or not os.path.isdir(path):
            continue
        if not any(path == kept or path.startswith(kept + os.sep) for kept in dirs):
            dirs.append(path)
    return dirs


def _memfd(name: str, text: str) -> int:
    fd = os.memfd_create(name, os.MFD_CLOEXEC)
    # Lone surrogates cannot be encoded; replacing them turns such code into a syntax error.
    data = text.encode("utf-8", errors="replace")
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
    os.lseek(fd, 0, os.SEEK_SET)
    return fd
