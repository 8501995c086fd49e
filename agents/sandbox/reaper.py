"""What the sandbox leaves behind, removed: processes, files, directories, and the uid it ran as.

As root each concurrent run gets a uid of its own (:func:`uid_slot`), so that RLIMIT_NPROC counts only that
run and "every process of this uid" (:func:`kill_sweep`) is exactly what to kill afterwards, setsid()
escapees included; its files in the world-writable directories go too (:func:`remove_files_of`). Without
root the sweep recognises a run's processes by the ``HOME`` it was started with.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import shutil
import signal
import stat
import sys
import tempfile
import time
from collections.abc import Callable, Iterator

__all__ = ["SHARED_DIRS", "kill_sweep", "remove_files_of", "remove_tree", "uid_slot"]

# No account is needed for these uids; a lock file per uid keeps two runs, even from two supervisors,
# off the same one.
_UID_BASE = 2_100_000_000
_UID_SLOTS = 4096
# The host's folders that any uid may write to: the built-in sandbox covers each with a tmpfs of the run's
# own (harness.py) and, where it could not make a mount namespace, removes the run's files from them.
SHARED_DIRS = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock")


def remove_tree(root: str) -> None:
    """Remove ``root``, which we created; a run of our own uid may have left directories in it that
    even we cannot enter (root is not stopped by modes). Nothing outside ``root`` is ever touched."""

    def unlock(function: object, target: str, *_: object) -> None:
        if target != root and not target.startswith(root + os.sep):
            return
        for item in dict.fromkeys((target if target == root else os.path.dirname(target), target)):
            with contextlib.suppress(OSError):
                if stat.S_ISDIR(os.lstat(item).st_mode):  # never chmod through a symlink
                    os.chmod(item, 0o700)
        with contextlib.suppress(OSError):
            if stat.S_ISDIR(os.lstat(target).st_mode):
                shutil.rmtree(target, ignore_errors=True)
            else:
                os.unlink(target)

    if sys.version_info >= (3, 12):
        shutil.rmtree(root, onexc=unlock)
    else:
        shutil.rmtree(root, onerror=unlock)


@contextlib.contextmanager
def uid_slot(*, enabled: bool) -> Iterator[int | None]:
    """A uid that no other run is using, held for the block; None when runs keep our uid."""
    if not enabled:
        yield None
        return
    lock_dir = _lock_dir()
    start = secrets.randbelow(_UID_SLOTS)
    for offset in range(_UID_SLOTS):
        uid = _UID_BASE + (start + offset) % _UID_SLOTS
        fd = os.open(os.path.join(lock_dir, str(uid)), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        try:
            # A supervisor that died mid-run may have left processes or files under this uid.
            kill_sweep(uid, None)
            remove_files_of(uid)
            yield uid
        finally:
            os.close(fd)
        return
    raise RuntimeError(f"all {_UID_SLOTS} sandbox uids from {_UID_BASE} are in use (locks in {lock_dir})")


def _lock_dir() -> str:
    base = "/run" if os.access("/run", os.W_OK) else tempfile.gettempdir()
    path = os.path.join(base, "heidi-sandbox-uids")
    os.makedirs(path, mode=0o700, exist_ok=True)
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o022:
        raise RuntimeError(
            f"sandbox lock directory {path} must be a directory owned by uid {os.geteuid()} that only it "
            "can write"
        )
    return path


def kill_sweep(uid: int | None, home: str | None) -> int:
    """SIGKILL every live process of ``uid`` (or, without one, whose environment has ``HOME=home``)
    until none is left; returns how many survived three seconds of that."""
    return kill_until_gone(lambda: _members(uid, home))


def kill_until_gone(members: Callable[[], list[int]], patience_s: float = 3.0) -> int:
    """SIGKILL ``members()`` again and again until none is left; how many survived ``patience_s``."""
    deadline = time.monotonic() + patience_s
    while True:
        pids = members()
        if not pids or time.monotonic() > deadline:
            return len(pids)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.002)  # SIGKILL lands asynchronously; look again once it has


def _members(uid: int | None, home: str | None) -> list[int]:
    marker = f"HOME={home}".encode() if home is not None else None
    own = os.getpid()
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == own:
            continue
        try:
            with open(f"/proc/{name}/status", "rb") as handle:
                status = handle.read()
            if uid is not None:
                line = status[status.index(b"\nUid:") + 5 :].split(b"\n", 1)[0]
                if str(uid).encode() not in line.split():
                    continue
            elif marker is None:
                continue
            else:
                with open(f"/proc/{name}/environ", "rb") as handle:
                    if marker not in handle.read().split(b"\0"):
                        continue
        except (OSError, ValueError):
            continue  # gone, or not ours to read
        state = status[status.index(b"State:") + 6 :].split(maxsplit=1)[0] if b"State:" in status else b""
        if state not in (b"Z", b"X"):  # zombies are dead already; their parent reaps them
            found.append(int(name))
    return found


def remove_files_of(uid: int) -> None:
    """Remove what ``uid`` left in the world-writable directories (its processes are gone by now)."""
    for directory in dict.fromkeys((*SHARED_DIRS, tempfile.gettempdir())):
        try:
            entries = list(os.scandir(directory))
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.stat(follow_symlinks=False).st_uid != uid:
                    continue
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path, ignore_errors=True)
                else:
                    os.unlink(entry.path)
            except OSError:
                continue
