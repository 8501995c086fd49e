"""Keys for the dashboard, read raw from the terminal: a pure escape-sequence parser and a reader thread.

The terminal is put in cbreak mode (keys arrive one by one, nothing is echoed, Ctrl+C still signals) and
its previous settings are restored on exit, whatever the exit. A lone ESC is told apart from the start of
an arrow key's sequence by waiting briefly for the rest of it, as every terminal program must.
"""

from __future__ import annotations

import codecs
import os
import queue
import select
import termios
import threading
import tty
from types import TracebackType
from typing import Any

_ESC = "\x1b"
_ESC_WAIT_S = 0.05
_CSI_KEYS: dict[str, str] = {
    "A": "up",
    "B": "down",
    "C": "right",
    "D": "left",
    "H": "home",
    "F": "end",
    "1~": "home",
    "7~": "home",
    "4~": "end",
    "8~": "end",
    "5~": "pgup",
    "6~": "pgdn",
    "2~": "insert",
    "3~": "delete",
    "Z": "backtab",
}
_SS3_KEYS: dict[str, str] = {"A": "up", "B": "down", "C": "right", "D": "left", "H": "home", "F": "end"}


class KeyParser:
    """Turns terminal input into key names: printable characters as themselves, and ``up``, ``down``,
    ``pgup``, ``pgdn``, ``home``, ``end``, ``enter``, ``tab``, ``backtab``, ``backspace``, ``esc`` for the rest.

    Feed it bytes as they arrive; an escape sequence cut between two reads is completed by the next
    :meth:`feed`, or taken as a lone ESC by :meth:`flush` once the caller has waited long enough.
    """

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._pending = ""

    @property
    def pending(self) -> bool:
        """True while an incomplete escape sequence is held back."""
        return bool(self._pending)

    def feed(self, data: bytes) -> list[str]:
        """The keys completed by ``data``."""
        text = self._pending + self._decoder.decode(data)
        self._pending = ""
        return self._parse(text)

    def flush(self) -> list[str]:
        """The held-back input, with its ESC as a key of its own (no more of the sequence came)."""
        text, self._pending = self._pending, ""
        if not text:
            return []
        return ["esc", *self._parse(text[1:], final=True)]

    def _parse(self, text: str, *, final: bool = False) -> list[str]:
        keys: list[str] = []
        i, n = 0, len(text)
        while i < n:
            ch = text[i]
            if ch == _ESC:
                end, key = self._escape(text, i)
                if end is None:
                    if final:
                        keys.append("esc")
                        i += 1
                        continue
                    self._pending = text[i:]
                    break
                if key:
                    keys.append(key)
                i = end
                continue
            if ch in "\r\n":
                keys.append("enter")
            elif ch == "\t":
                keys.append("tab")
            elif ch in "\x7f\x08":
                keys.append("backspace")
            elif ch.isprintable():
                keys.append(ch)
            i += 1
        return keys

    @staticmethod
    def _escape(text: str, i: int) -> tuple[int | None, str | None]:
        """Where the escape sequence at ``i`` ends and its key (``None``: unknown); end ``None``: incomplete."""
        n = len(text)
        if i + 1 >= n:
            return None, None
        kind = text[i + 1]
        if kind == "[":
            j = i + 2
            while j < n and "\x20" <= text[j] <= "\x3f":
                j += 1
            if j >= n:
                return None, None
            return j + 1, _CSI_KEYS.get(text[i + 2 : j + 1])
        if kind == "O":
            if i + 2 >= n:
                return None, None
            return i + 3, _SS3_KEYS.get(text[i + 2])
        # ESC followed by anything else (another ESC, Alt+key): the ESC is a key, the rest parses on.
        return i + 1, "esc"


class Keyboard:
    """Puts the terminal ``fd`` in cbreak mode and queues its keys from a daemon thread (context manager).

    ``keys`` is a :class:`queue.SimpleQueue`, which signal handlers may also put into.
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.keys: queue.SimpleQueue[str] = queue.SimpleQueue()
        self._saved: list[Any] | None = None
        self._stop_r, self._stop_w = -1, -1
        self._thread = threading.Thread(target=self._read, name="dash-keys", daemon=True)

    def __enter__(self) -> Keyboard:
        self._saved = termios.tcgetattr(self.fd)
        try:
            tty.setcbreak(self.fd, termios.TCSANOW)
            self._stop_r, self._stop_w = os.pipe()
            self._thread.start()
        except BaseException:
            self.restore()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._stop_w >= 0:
            os.write(self._stop_w, b"x")
        if self._thread.is_alive():
            self._thread.join(timeout=1.0)
        self.restore()
        for fd in (self._stop_r, self._stop_w):
            if fd >= 0:
                os.close(fd)
        self._stop_r = self._stop_w = -1

    def restore(self) -> None:
        """Put the terminal's settings back as they were (idempotent)."""
        if self._saved is not None:
            saved, self._saved = self._saved, None
            try:
                termios.tcsetattr(self.fd, termios.TCSADRAIN, saved)
            except termios.error:
                pass  # the terminal is gone (hang-up): there is nothing left to restore

    def _read(self) -> None:
        parser = KeyParser()
        while True:
            timeout = _ESC_WAIT_S if parser.pending else None
            ready, _, _ = select.select([self.fd, self._stop_r], [], [], timeout)
            if self._stop_r in ready:
                return
            if not ready:
                keys = parser.flush()
            else:
                try:
                    data = os.read(self.fd, 1024)
                except OSError:
                    data = b""
                if not data:
                    # The terminal went away: nothing more can be typed, so quit.
                    self.keys.put("hangup")
                    return
                keys = parser.feed(data)
            for key in keys:
                self.keys.put(key)
