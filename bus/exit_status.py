"""How an agent's exit status tells the supervisor how its stage ended (a contract between processes).

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

__all__ = ["EXIT_FATAL", "EXIT_NOSPACE", "EXIT_STOPPED", "is_no_space"]

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
