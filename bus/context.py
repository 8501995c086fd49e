"""The process's shared ZeroMQ context, created lazily and anew after a fork.

Publishers have a context of their own (:mod:`heidi_engine.bus.publisher`): terminating it is what
makes libzmq deliver a closed socket's queue before the process exits.
"""

from __future__ import annotations

import os
import threading

import zmq

_lock = threading.Lock()
_context: zmq.Context[zmq.Socket[bytes]] | None = None
_pid = 0

# Small enough that closing never stalls a shutdown, large enough to flush a last event.
DEFAULT_LINGER_MS = 200


def context() -> zmq.Context[zmq.Socket[bytes]]:
    """This process's context; a child after fork gets a fresh one, never the parent's."""
    global _context, _pid
    with _lock:
        if _context is None or _pid != os.getpid():
            _context = zmq.Context()
            _pid = os.getpid()
        return _context


def new_socket(
    kind: int,
    *,
    linger_ms: int = DEFAULT_LINGER_MS,
    max_msg: int | None = None,
    ctx: zmq.Context[zmq.Socket[bytes]] | None = None,
) -> zmq.Socket[bytes]:
    """A socket of ``kind`` with LINGER (and MAXMSGSIZE for receivers) set, in ``ctx`` (default: the
    process's context)."""
    sock = (ctx or context()).socket(kind)
    sock.setsockopt(zmq.LINGER, linger_ms)
    if max_msg is not None:
        sock.setsockopt(zmq.MAXMSGSIZE, max_msg)
    return sock
