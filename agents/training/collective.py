"""Rank 0's pause/stop decision, shared by every rank of a torchrun/accelerate job at each optimizer step.

Ranks that read the bus at different moments would disagree about pausing or stopping, and a rank that
leaves the training loop while the others enter the next step's gradient all-reduce deadlocks them. So
only rank 0 reads its control; at every step boundary one small all-reduce carries its verdict (run, hold
or stop) to every rank, together with each rank's token count (summed: the job's throughput) and each
rank's peak memory (one slot per rank: the Trainer view shows every rank). While rank
0 is parked the others wait in the same collective, which rank 0 renews every :data:`KEEPALIVE_S`
seconds from a helper thread, so that no wait comes near the process group's timeout however long the
pause lasts.

A process that used a process group must not begin shutting down while one of PyTorch's worker threads
still holds the last collective's tensors: the gloo worker that ran the Trainer's final all-gather frees
them after the caller has moved on, and freeing a tensor that Python gave up needs the GIL; once the
interpreter is finalizing, that thread is ended mid-destructor and the process aborts ("terminate called
without an active exception", SIGABRT), on any rank, with or without a callback. So the first
:class:`StepCollective` of a process registers :func:`let_workers_finish` to run at exit: it hands the
GIL over until no ``pt_*`` thread of the process is runnable (bounded by :data:`SETTLE_S`).
"""

from __future__ import annotations

import atexit
import os
import threading
import time
from collections.abc import Callable

import torch
import torch.distributed as dist

__all__ = ["HOLD", "KEEPALIVE_S", "RUN", "SETTLE_S", "STOP", "StepCollective", "let_workers_finish", "world"]

RUN, HOLD, STOP = 0, 1, 2
KEEPALIVE_S = 5.0
SETTLE_S = 2.0  # the most a process's exit waits for PyTorch's worker threads
_SETTLE_POLL_S = 0.01
_SETTLE_QUIET_POLLS = 3
_exit_hook = threading.Lock()
_exit_hook_registered = False


def world() -> tuple[int, int]:
    """``(rank, world size)`` of the initialized default process group, else ``(0, 1)``."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class StepCollective:
    """One all-reduce per optimizer step: rank 0's verdict, the job's token count and every rank's peak memory.

    Every rank must call :meth:`exchange` (and :meth:`hold`, when the verdict is :data:`HOLD`) in the
    same order; only rank 0's ``verdict`` argument counts.
    """

    def __init__(self, device: torch.device, *, keepalive_s: float = KEEPALIVE_S) -> None:
        if keepalive_s <= 0:
            raise ValueError(f"keepalive_s must be > 0, got {keepalive_s!r}")
        self.rank, self.size = world()
        self._keepalive_s = keepalive_s
        # The gloo backend reduces host tensors; NCCL needs the rank's own GPU.
        self._buffer = torch.zeros(2 + self.size, dtype=torch.long, device=device)
        self.peak_mb: list[int] = [0] * self.size  # every rank's peak memory at the last exchange
        _register_exit_hook()

    def exchange(self, verdict: int, tokens: int, peak_mb: float | None = None) -> tuple[int, int]:
        """Rank 0's verdict and the sum of every rank's ``tokens``; every rank's ``peak_mb`` lands in
        :attr:`peak_mb` (MiB, by rank; ``None`` repeats this rank's last figure)."""
        self._buffer.zero_()
        self._buffer[0] = verdict if self.rank == 0 else 0
        self._buffer[1] = tokens
        self._buffer[2 + self.rank] = self.peak_mb[self.rank] if peak_mb is None else round(peak_mb)
        dist.all_reduce(self._buffer)
        values = self._buffer.tolist()
        self.peak_mb = [int(v) for v in values[2:]]
        return int(values[0]), int(values[1])

    def hold(self, park: Callable[[], None], verdict: Callable[[], int]) -> int:
        """Park every rank until rank 0's ``park`` returns; then every rank gets rank 0's ``verdict()``.

        ``verdict`` may say :data:`HOLD` again (paused anew): the ranks then park again.
        """
        while True:
            if self.rank != 0:
                code, _ = self.exchange(HOLD, 0)
            else:
                self._park_with_keepalive(park)
                code, _ = self.exchange(verdict(), 0)
            if code != HOLD:
                return code

    def _park_with_keepalive(self, park: Callable[[], None]) -> None:
        done = threading.Event()

        def keepalive() -> None:
            # The main thread is inside park() and makes no collective call meanwhile.
            while not done.wait(self._keepalive_s):
                self.exchange(HOLD, 0)

        thread = threading.Thread(target=keepalive, name="rank0-keepalive", daemon=True)
        thread.start()
        try:
            park()
        finally:
            done.set()
            thread.join()


def _register_exit_hook() -> None:
    global _exit_hook_registered
    with _exit_hook:
        if not _exit_hook_registered:
            _exit_hook_registered = True
            atexit.register(let_workers_finish)


def _workers_runnable() -> bool:
    """Whether one of this process's PyTorch threads (named ``pt_…``: gloo's run loops, NCCL's
    watchdog) is running or waiting for a CPU (Linux; elsewhere: never known, so False)."""
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return False
    for tid in tasks:
        try:
            with open(f"/proc/self/task/{tid}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue  # the thread ended meanwhile
        name_end = stat.rfind(b")")
        name = stat[stat.find(b"(") + 1 : name_end]
        if name.startswith(b"pt_") and stat[name_end + 2 : name_end + 3] == b"R":
            return True
    return False


def let_workers_finish(timeout_s: float = SETTLE_S) -> None:
    """Give PyTorch's worker threads the GIL until none of them has anything left to do (see the module
    docstring); at most ``timeout_s``. Registered at exit by the first :class:`StepCollective`."""
    deadline = time.monotonic() + timeout_s
    quiet = 0
    while quiet < _SETTLE_QUIET_POLLS and time.monotonic() < deadline:
        time.sleep(_SETTLE_POLL_S)  # the GIL is free meanwhile: a worker waiting for it takes it
        quiet = 0 if _workers_runnable() else quiet + 1
