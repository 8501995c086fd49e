"""Where the supervisor's log lines go: journald-friendly stderr in the foreground, a rotated file detached.

In the foreground under systemd (``JOURNAL_STREAM`` names our stderr), each line starts with its
syslog priority (``<3>`` error, ``<4>`` warning, ``<6>`` info, ``<7>`` debug) and carries no timestamp:
journald stores both. Elsewhere in the foreground lines carry a timestamp. Detached, the log goes to
``<home>/supervisor.log``, rotated at ``max_bytes`` with ``backups`` old files (``supervisor.log.1`` …);
stdout and stderr follow each rotation, so a stray print or a traceback lands in the current file too.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys
from pathlib import Path

__all__ = ["JournalFormatter", "StdioRotatingHandler", "configure_logging", "rotate_now", "stderr_is_journal"]

MAX_BYTES = 10 * 1024 * 1024
BACKUPS = 3
_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_PRIORITY = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6, logging.DEBUG: 7}


class JournalFormatter(logging.Formatter):
    """``<priority>name: message``; every line of a multi-line message gets the prefix."""

    def __init__(self) -> None:
        super().__init__("%(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        priority = _PRIORITY.get(record.levelno, 6 if record.levelno < logging.WARNING else 3)
        return "\n".join(f"<{priority}>{line}" for line in super().format(record).splitlines())


def stderr_is_journal(env: dict[str, str] | None = None) -> bool:
    """Whether stderr is connected to journald (systemd sets ``JOURNAL_STREAM=<dev>:<inode>`` for it)."""
    value = (os.environ if env is None else env).get("JOURNAL_STREAM", "")
    device, _sep, inode = value.partition(":")
    try:
        stat = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError):
        return False
    return device.isdigit() and inode.isdigit() and (stat.st_dev, stat.st_ino) == (int(device), int(inode))


class StdioRotatingHandler(logging.handlers.RotatingFileHandler):
    """A RotatingFileHandler whose rotation also points stdout and stderr (fds 1, 2) at the new file."""

    def doRollover(self) -> None:
        super().doRollover()
        if self.stream is not None:
            for fd in (1, 2):
                os.dup2(self.stream.fileno(), fd)


def rotate_now(path: Path, max_bytes: int = MAX_BYTES, backups: int = BACKUPS) -> None:
    """Rotate ``path`` before it is opened again if it has reached ``max_bytes`` (an earlier daemon's log)."""
    try:
        if path.stat().st_size < max_bytes:
            return
    except FileNotFoundError:
        return
    for index in range(backups - 1, 0, -1):
        older = path.with_name(f"{path.name}.{index}")
        if older.exists():
            os.replace(older, path.with_name(f"{path.name}.{index + 1}"))
    os.replace(path, path.with_name(f"{path.name}.1"))


def configure_logging(level: str, log_file: Path | None) -> None:
    """The root logger for the daemon: ``log_file`` (detached, rotated) or stderr (journald-aware)."""
    handler: logging.Handler
    if log_file is not None:
        handler = StdioRotatingHandler(log_file, maxBytes=MAX_BYTES, backupCount=BACKUPS, encoding="utf-8")
        handler.setFormatter(logging.Formatter(_TEXT_FORMAT))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JournalFormatter() if stderr_is_journal() else logging.Formatter(_TEXT_FORMAT))
    logging.basicConfig(level=level, handlers=[handler], force=True)
