"""A process that used a process group waits at exit, GIL released, until PyTorch's worker threads (``pt_…``)
have nothing left to run — and not for ever."""

from __future__ import annotations

import ctypes
import threading
import time

from heidi_engine.agents.training.collective import _workers_runnable, let_workers_finish


def _busy_worker(name: bytes, until: threading.Event, started: threading.Event) -> None:
    libc = ctypes.CDLL(None)
    libc.prctl(15, ctypes.c_char_p(name), 0, 0, 0)  # PR_SET_NAME: the name PyTorch's threads carry
    started.set()
    while not until.is_set():
        sum(range(1000))  # runnable all along, handing the GIL back and forth


def _start(name: bytes, until: threading.Event) -> threading.Thread:
    started = threading.Event()
    worker = threading.Thread(target=_busy_worker, args=(name, until, started), daemon=True)
    worker.start()
    assert started.wait(10)
    return worker


def test_exit_waits_for_a_runnable_worker_and_then_returns() -> None:
    done = threading.Event()
    worker = _start(b"pt_gloo_runloop", done)
    assert _workers_runnable()
    threading.Timer(0.5, done.set).start()
    let_workers_finish(timeout_s=60)
    finished_while_waiting = not worker.is_alive()
    worker.join()
    assert finished_while_waiting, "returned while a pt_ thread was still running"
    assert not _workers_runnable()


def test_exit_gives_up_at_its_bound_on_a_worker_that_never_rests() -> None:
    forever = threading.Event()
    worker = _start(b"pt_spinner", forever)
    try:
        began = time.monotonic()
        let_workers_finish(timeout_s=0.3)
        assert time.monotonic() - began >= 0.3  # it waited for the worker, up to its bound
        assert worker.is_alive()  # and returned while the worker still ran
    finally:
        forever.set()
        worker.join()


def test_other_threads_are_not_waited_for() -> None:
    done = threading.Event()
    worker = _start(b"flusher", done)
    try:
        began = time.monotonic()
        let_workers_finish(timeout_s=20)
        assert time.monotonic() - began < 20, "it waited for a thread that is not PyTorch's"
        assert worker.is_alive()
    finally:
        done.set()
        worker.join()
