"""Every exit status of the project, in one place: the commands' (what scripts rely on) and the agents'
(how an agent tells the supervisor how its stage ended, a contract between processes).

The commands (``autotrain-supervisor``, ``autotrain-menu``, ``autotrain-dash``, ``python -m
heidi_engine.ui.http``):

====  ======================================================================================
0     :data:`EXIT_OK`: success
1     :data:`EXIT_FAILURE`: a runtime failure
2     :data:`EXIT_BAD_USAGE`: bad usage or an invalid configuration (nothing was started)
3     :data:`EXIT_NO_SUPERVISOR`: no supervisor reachable
130   :data:`EXIT_INTERRUPTED`: ended by Ctrl+C (the shell's code)
====  ======================================================================================

The agents:

====  ======================================================================================
0     the stage is complete
73    :data:`EXIT_NOSPACE`: the disk is full; the supervisor restarts the agent once space returns,
      without counting it as a crash
75    :data:`EXIT_STOPPED`: stopped at a boundary on request; the stage is not complete
78    :data:`EXIT_FATAL`: a permanent error (bad data, missing model): retrying cannot help
else  a crash: restarted with backoff, a bounded number of times
====  ======================================================================================
"""

from __future__ import annotations

import errno

__all__ = [
    "EXIT_BAD_USAGE",
    "EXIT_FAILURE",
    "EXIT_FATAL",
    "EXIT_INTERRUPTED",
    "EXIT_NOSPACE",
    "EXIT_NO_SUPERVISOR",
    "EXIT_OK",
    "EXIT_STOPPED",
    "is_no_space",
]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_BAD_USAGE = 2
EXIT_NO_SUPERVISOR = 3
EXIT_INTERRUPTED = 130
EXIT_NOSPACE = 73  # EX_CANTCREAT
EXIT_STOPPED = 75  # EX_TEMPFAIL
EXIT_FATAL = 78  # EX_CONFIG

_NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})


def is_no_space(exc: BaseException) -> bool:
    """True when ``exc`` (or what caused it) is a full disk or an exhausted quota."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in _NO_SPACE:
            return True
        seen = seen.__cause__ or seen.__context__
    return False
