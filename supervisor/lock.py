"""The single-instance lock: ``<home>/pipeline.pid``, held with ``flock`` for the daemon's lifetime.

The lock is taken before any socket is bound: a second ipc bind would silently steal the endpoints of
the running supervisor. The kernel drops a flock when its holder dies, so a kill -9 leaves no stale lock.
The file holds the holder's pid while it runs and is empty after a clean shutdown; it is never removed.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from heidi_engine.bus.storage import FILE_MODE

PID_FILE = "pipeline.pid"


class AlreadyRunning(Exception):
    """Another supervisor holds the lock on this home; ``pid`` is its process id when known."""

    def __init__(self, home: Path, pid: int | None) -> None:
        holder = f"pid {pid}" if pid else "another process"
        super().__init__(f"a supervisor is already running on {home} ({holder} holds {home / PID_FILE})")
        self.pid = pid


def read_pid(home: str | os.PathLike[str]) -> int | None:
    """The pid written in ``pipeline.pid``, if any."""
    try:
        text = (Path(home) / PID_FILE).read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


class InstanceLock:
    """Hold ``pipeline.pid`` exclusively; it contains the holder's pid."""

    def __init__(self, home: str | os.PathLike[str]) -> None:
        self.home = Path(home)
        self.path = self.home / PID_FILE
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise :class:`AlreadyRunning`.

        The file is never unlinked, so every starter locks the same inode; the check after ``flock``
        (the fd's inode must still be the path's) makes this hold even if someone removed or replaced
        the file by hand between our open and our lock: then we retry on the new file.
        """
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise AlreadyRunning(self.home, read_pid(self.home)) from None
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.fchmod(fd, FILE_MODE)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def update_pid(self) -> None:
        """Rewrite the pid (after ``--detach`` forked)."""
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, f"{os.getpid()}\n".encode(), 0)

    def release(self) -> None:
        """Empty the pid file and drop the lock. The file stays: unlinking it would let two starters
        hold locks on two different files at once."""
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, 0)
        os.close(self._fd)
        self._fd = None
