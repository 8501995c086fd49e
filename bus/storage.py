"""Private files: every file the project writes under a home is 0600 and every folder 0700.

Also the atomic replace (temp file in the same folder, fsync, rename, fsync of the folder) used for
``state.json``, ``ledger.json``, ``bus.json`` and ``config.json``, so a reader or a kill -9 never sees
half a file, and a crash cannot undo the rename; :class:`AtomicWriter` does it on a thread of its own for
a loop that must not wait on the disk. A kill -9 between the temp file and the rename leaves
the temp file behind: :func:`remove_orphan_temps` clears them where no writer can be at work.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import pwd
import re
import stat
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

FILE_MODE = 0o600
DIR_MODE = 0o700

_TEMP_SUFFIX = ".tmp"
# What mkstemp names the atomic write's temp file: ".<target>." + eight characters of its alphabet + ".tmp".
_TEMP_NAME = re.compile(r"\..+\.[a-z0-9_]{8}\.tmp")


def ensure_private_dir(path: str | os.PathLike[str]) -> Path:
    """Create ``path`` (and parents) as needed and make it 0700."""
    folder = Path(path)
    folder.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    os.chmod(folder, DIR_MODE)
    return folder


def claim_private_dir(path: str | os.PathLike[str]) -> Path:
    """``path`` as a folder only this user can hold, in a folder others can write to (``/tmp``): made here,
    0700, or, when it exists, accepted only as a real folder (not a link) of this user's with mode 0700.
    Anything else may be another user's, planted to take what is put in it: PermissionError naming it and
    its owner."""
    folder = Path(path)
    try:
        folder.mkdir(mode=DIR_MODE)
        os.chmod(folder, DIR_MODE)
        return folder
    except FileExistsError:
        pass
    st = os.lstat(folder)
    if stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid() and stat.S_IMODE(st.st_mode) == DIR_MODE:
        return folder
    try:
        owner = pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        owner = f"uid {st.st_uid}"
    kind = "folder" if stat.S_ISDIR(st.st_mode) else "link" if stat.S_ISLNK(st.st_mode) else "file"
    raise PermissionError(f"{folder} already exists and is not this user's private folder (a {kind} of {owner}'s, "
                          f"mode {stat.S_IMODE(st.st_mode):04o}): refusing to use it; remove it, or use a "
                          "home with a shorter path")


def open_private_append(path: str | os.PathLike[str]) -> int:
    """An O_APPEND file descriptor on ``path``, created 0600."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, FILE_MODE)
    os.fchmod(fd, FILE_MODE)
    return fd


def atomic_write_bytes(
    path: str | os.PathLike[str], data: bytes, *, fsync: bool = True, mode: int = FILE_MODE
) -> None:
    """Replace ``path`` with ``data`` atomically: a reader sees the old file or the new one, never a mix.
    The one atomic write of the project (every file it writes under a home is ``mode`` 0600)."""
    target = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=_TEMP_SUFFIX, dir=target.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            if fsync:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, target)
        if fsync:
            fsync_dir(target.parent)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def remove_orphan_temps(
    folder: str | os.PathLike[str], *, recursive: bool = False, min_age_s: float = 0.0
) -> list[Path]:
    """Delete the temp files that :func:`atomic_write_bytes` left in ``folder`` (and below it when
    ``recursive``) when it was killed before its rename; returns them. Only where no writer can be at
    work (the home's lock held, the run not running); ``min_age_s`` spares the files younger than that,
    where another process (an editor of config.yaml) may write. A missing folder has none."""
    removed: list[Path] = []
    oldest = time.time() - min_age_s  # file times are wall-clock times
    for root, dirs, files in os.walk(folder):
        if not recursive:
            dirs.clear()
        for name in files:
            if not _TEMP_NAME.fullmatch(name):
                continue
            path = Path(root) / name
            try:
                st = path.lstat()
                if stat.S_ISREG(st.st_mode) and st.st_mtime <= oldest:
                    path.unlink()
                    removed.append(path)
            except FileNotFoundError:
                continue
    return removed


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Make the folder's entries (a rename, a new file) durable: without it a crash can undo a rename."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def json_bytes(obj: Any, *, indent: int | None = None) -> bytes:
    """``obj`` as the bytes :func:`atomic_write_json` writes: on one line unless ``indent``, which CPython's
    C encoder does four times faster than an indented one (a 75 KB state: 0.4 ms against 1.8 ms)."""
    text = json.dumps(obj, indent=indent) if indent is not None else json.dumps(obj, separators=(",", ":"))
    return (text + "\n").encode()


def atomic_write_json(
    path: str | os.PathLike[str], obj: Any, *, fsync: bool = True, indent: int | None = 2
) -> None:
    """:func:`atomic_write_bytes` of ``obj`` as JSON, indented unless ``indent`` is None (the files
    written every second, state and ledger, are serialised on one line by :func:`json_bytes`)."""
    atomic_write_bytes(path, json_bytes(obj, indent=indent), fsync=fsync)


def read_json(path: str | os.PathLike[str]) -> Any:
    """Parse a JSON file; ``OSError`` / ``ValueError`` propagate for the caller to word."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


class Replacement(NamedTuple):
    """Files to replace atomically, in order, as bytes, after an fsync of ``synced`` (what they describe)."""

    files: Sequence[tuple[Path, bytes]]
    synced: int | None = None


def replace_files(batch: Replacement) -> None:
    """Write ``batch`` here and now; a crash leaves each file whole, old or new."""
    if batch.synced is not None:
        os.fsync(batch.synced)
    for path, data in batch.files:
        atomic_write_bytes(path, data)


# A writer's thread idle this long ends (the next replacement starts another): a writer its owner never
# closed cannot keep the process from exiting, and an idle supervisor holds no thread for it.
WRITER_IDLE_S = 5.0


class AtomicWriter:
    """A thread that writes the replacements a loop hands it, so that the loop never waits on the disk.

    One handed over while another waits replaces it: only the newest matters. The thread starts with the
    first, ends when idle or closed, and is joined by :meth:`close`; the outcome of the newest written waits
    for :meth:`outcome`.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._cond = threading.Condition()
        self._pending: Replacement | None = None
        self._busy = False
        self._stopping = False
        self._done = False
        self._error: OSError | None = None
        self._thread: threading.Thread | None = None
        self._idle = False  # the thread ended for want of work

    def submit(self, batch: Replacement) -> None:
        with self._cond:
            if self._stopping:
                raise RuntimeError(f"{self.name} is closed")
            self._pending = batch
            if self._thread is None or self._idle:
                if self._thread is not None:
                    self._thread.join()  # already out of its loop
                self._idle = False
                self._thread = threading.Thread(target=self._run, name=self.name)
                self._thread.start()
            self._cond.notify_all()

    def outcome(self, unchanged: OSError | None) -> OSError | None:
        """The newest one's error (None: written) if one was written or failed since the last call, else
        ``unchanged`` (what the caller knew)."""
        with self._cond:
            done, self._done = self._done, False
            return self._error if done else unchanged

    def settle(self, *, drop: bool = False) -> None:
        """Wait until nothing is being written, nor (unless dropped: a newer one follows) waits to be."""
        with self._cond:
            if drop:
                self._pending = None
            self._cond.wait_for(lambda: not self._busy and self._pending is None)

    def stop(self) -> None:
        """Let the thread end once what waits (if anything) is written; a finalizer's call, it never blocks."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()

    def close(self, *, drop: bool = False) -> None:
        """Stop and join the thread, after it wrote what waits unless ``drop``."""
        with self._cond:
            if drop:
                self._pending = None
        self.stop()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        while True:
            with self._cond:
                if not self._cond.wait_for(lambda: self._pending is not None or self._stopping, WRITER_IDLE_S):
                    self._idle = True
                    return
                batch, self._pending = self._pending, None
                if batch is None:
                    return
                self._busy = True
            error: OSError | None = None
            try:
                replace_files(batch)
            except OSError as exc:
                error = exc
            except Exception as exc:  # a bug must not end the thread unseen: the loop reports it as a failure
                error = OSError(errno.EIO, f"{type(exc).__name__}: {exc}")
            with self._cond:
                self._busy = False
                self._done, self._error = True, error
                self._cond.notify_all()
