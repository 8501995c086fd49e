"""Signal handling: SIGTERM and SIGINT are recorded by the handler and acted on by the loop.

The handler only records the signal; the loop acts on it between two steps, so no signal can land in the
middle of a publish, a rotation or a run's start. The first signal stops the run gracefully, the second
shuts down fast (see :meth:`~heidi_engine.supervisor.facade.CommandFacade.on_signal`).
"""

from __future__ import annotations

import logging
import signal
from typing import Protocol

from heidi_engine.supervisor.pipeline import Pipeline

__all__ = ["SignalHost", "SignalLatch"]

# The daemon's log lines keep the one name they have always had, whichever module writes them.
log = logging.getLogger("heidi_engine.supervisor.broker")


class SignalHost(Protocol):
    """What acting on a signal needs of the supervisor."""

    @property
    def shutdown_requested(self) -> bool: ...

    @property
    def pipeline(self) -> Pipeline | None: ...

    def on_signal(self) -> None: ...


class SignalLatch:
    """The signals recorded by the handler and not yet acted on, oldest first."""

    def __init__(self) -> None:
        self._pending: list[int] = []

    def note(self, signum: int) -> None:
        """The handler's whole work: record the signal."""
        self._pending.append(signum)

    def act(self, host: SignalHost) -> None:
        """Act on every recorded signal in turn, and say in the log what each one does."""
        while self._pending:
            name = signal.Signals(self._pending.pop(0)).name
            again = host.shutdown_requested
            active = host.pipeline is not None and not host.pipeline.finished
            host.on_signal()
            if active and not again:
                log.info("received %s: stopping the run at the next stage boundary (Ctrl-C again to stop now)", name)
            elif active:
                log.info("received %s again: stopping now (the agents are terminated)", name)
            else:
                log.info("received %s: shutting down", name)
